#!/usr/bin/env bash
# JS-only self test of the interop scripts: write -> read round trips (several batch
# sizes), --append continuation, tamper detection, and a tiny benchmark run.
# Run after ./setup.sh. Exits non-zero on the first failure.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/kappa-rs-interop-selftest.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
SEED=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
fail () { echo "selftest: FAIL: $*" >&2; exit 1; }
field () { node -e 'const o=JSON.parse(process.argv[1]); process.stdout.write(String(o[process.argv[2]]))' "$1" "$2"; }

for spec in "0 1" "1 1" "1000 1" "1000 7" "1000 100" "1000 1000" "2500 1000"; do
  set -- $spec
  d="$TMP/feed-$1-$2"
  w="$(node hypercore-write.js "$d" "$SEED" "$1" "$2")"
  r="$(node hypercore-read.js "$d" --verify-all)" || fail "read N=$1 BATCH=$2: $r"
  for f in key length byteLength digest; do
    [ "$(field "$w" "$f")" = "$(field "$r" "$f")" ] || fail "N=$1 BATCH=$2: $f differs: $w vs $r"
  done
  [ "$(field "$r" verified)" = true ] && [ "$(field "$r" treeVerified)" = true ] || fail "N=$1 BATCH=$2 not verified: $r"
  echo "selftest: ok N=$1 BATCH=$2 digest=$(field "$r" digest)"
done

# --append continues a feed; the result must equal a feed written in one go.
d="$TMP/feed-1000-100"
out="$(node hypercore-read.js "$d" --append 5)" || fail "append: $out"
after="$(echo "$out" | tail -1)"
[ "$(field "$after" length)" = 1005 ] || fail "append: length $(field "$after" length)"
exp="$(node -e '
const s=require("sodium-native"); const h=s.crypto_generichash_instance(null,32); const l=Buffer.alloc(4)
const put=(t)=>{const b=Buffer.from(t); l.writeUInt32BE(b.length,0); h.update(l); h.update(b)}
for (let i=0;i<1000;i++) put("entry-"+i); for (let i=0;i<5;i++) put("more-"+i)
const o=Buffer.alloc(32); h.final(o); process.stdout.write(o.toString("hex"))')"
[ "$(field "$after" digest)" = "$exp" ] || fail "append: digest $(field "$after" digest) != $exp"
echo "selftest: ok --append 5"

# Tampering is detected (exit 3): a data byte (tree check) and a signature byte.
cp -r "$d" "$TMP/t1"; printf 'X' | dd of="$TMP/t1/data" bs=1 seek=3 conv=notrunc status=none
set +e; node hypercore-read.js "$TMP/t1" >/dev/null; rc=$?; set -e
[ "$rc" = 3 ] || fail "tampered data: exit $rc, expected 3"
cp -r "$d" "$TMP/t2"; printf 'X' | dd of="$TMP/t2/signatures" bs=1 seek=$((32 + 64 * 1004 + 5)) conv=notrunc status=none
set +e; node hypercore-read.js "$TMP/t2" >/dev/null; rc=$?; set -e
[ "$rc" = 3 ] || fail "tampered signature: exit $rc, expected 3"
echo "selftest: ok tamper detection"

node bench-hypercore.js --n 2000 --single-n 200 --gets 500 --dir "$TMP" >/dev/null || fail "bench"
echo "selftest: ok bench smoke"
echo "selftest: all ok"
