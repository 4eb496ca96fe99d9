#!/usr/bin/env bash
# JS <-> JS self test of replicate-peer.js over TCP loopback (hypercore 8 / protocol 7):
#   - non-live full replication of 1000 blocks in all four (listener x initiator) combos;
#   - live replication: writer appends 5 more entries during the session, reader stops
#     at --expect-length 1005 (writer listening as responder and as initiator, and the
#     reader listening);
#   - sparse replica (--sparse 100:200) gets exactly 100 blocks (both roles);
#   - failures exit non-zero: two initiators (Noise handshake error), wrong key
#     (ETIMEOUT before open, ~4 s).
# Run after ./setup.sh. Exits non-zero on the first failure. Takes ~15 s.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
SEED=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
KEY=03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8
PEER="node replicate-peer.js"
SELFTEST=replicate-selftest
# shellcheck source=lib/selftest.sh
source lib/selftest.sh
# field JSONLINE NAME
field () { node -e 'const o=JSON.parse(process.argv[1]); process.stdout.write(String(o[process.argv[2]]))' "$1" "$2"; }
# expected content digest (lib/common ContentDigest) of a list of entries given as "prefix:start:end" ranges
digest_of () {
  node -e '
const { ContentDigest } = require("./lib/common"); const d = new ContentDigest()
for (const r of process.argv.slice(1)) { const [p, a, b] = r.split(":"); for (let i = +a; i < +b; i++) d.update(Buffer.from(p + i)) }
process.stdout.write(d.digestHex())' "$@"
}
FULL="$(digest_of entry-:0:1000)"
LIVE="$(digest_of entry-:0:1000 live-:0:5)"
SPARSE="$(digest_of entry-:100:200)"

check_done () { # LINE LENGTH DOWNLOADED DIGEST WHAT
  local line="$1"
  [ -n "$line" ] || fail "$5: no done line"
  [ "$(field "$line" length)" = "$2" ] || fail "$5: length != $2: $line"
  [ "$(field "$line" downloaded)" = "$3" ] || fail "$5: downloaded != $3: $line"
  [ "$(field "$line" digest)" = "$4" ] || fail "$5: digest != $4: $line"
  [ "$(field "$line" verified)" = true ] || fail "$5: not verified: $line"
  [ "$(field "$line" key)" = "$KEY" ] || fail "$5: key: $line"
}

# ---- non-live, all four combos: who listens x who is the initiator
i=0
for combo in "writer responder" "writer initiator" "reader responder" "reader initiator"; do
  set -- $combo
  i=$((i + 1))
  W=(--dir "$TMP/nl$i-w" --seed "$SEED" --append 1000)
  R=(--dir "$TMP/nl$i-r" --key "$KEY")
  if [ "$2" = responder ]; then lr=--responder cr=--initiator; else lr=--initiator cr=--responder; fi
  if [ "$1" = writer ]; then
    run "nl$i" "${W[@]}" --listen 0 "$lr" -- "${R[@]}" --connect 127.0.0.1:PORT "$cr"
    wo="$TMP/nl$i.l" ro="$TMP/nl$i.c" wrc=$LRC rrc=$CRC
  else
    run "nl$i" "${R[@]}" --listen 0 "$lr" -- "${W[@]}" --connect 127.0.0.1:PORT "$cr"
    ro="$TMP/nl$i.l" wo="$TMP/nl$i.c" rrc=$LRC wrc=$CRC
  fi
  [ "$wrc" = 0 ] && [ "$rrc" = 0 ] || fail "non-live $combo: exit writer=$wrc reader=$rrc: $(cat "$wo" "$ro")"
  check_done "$(event "$ro" done)" 1000 1000 "$FULL" "non-live $combo reader"
  check_done "$(event "$wo" done)" 1000 1000 "$FULL" "non-live $combo writer"
  rd="$(node hypercore-read.js "$TMP/nl$i-r")" || fail "non-live $combo: hypercore-read on replica: $rd"
  [ "$(field "$rd" treeVerified)" = true ] && [ "$(field "$rd" digest)" = "$FULL" ] || fail "non-live $combo: replica check: $rd"
  echo "replicate-selftest: ok non-live, $1 listens as $2 (${SECS}s)"
done

# ---- live: writer appends live-0..4 after the session started; reader waits for 1005
i=0
for combo in "writer responder" "writer initiator" "reader responder"; do
  set -- $combo
  i=$((i + 1))
  W=(--dir "$TMP/lv$i-w" --seed "$SEED" --append 1000 --live --append-during-live 5)
  R=(--dir "$TMP/lv$i-r" --key "$KEY" --live --expect-length 1005)
  if [ "$2" = responder ]; then lr=--responder cr=--initiator; else lr=--initiator cr=--responder; fi
  if [ "$1" = writer ]; then
    run "lv$i" "${W[@]}" --listen 0 "$lr" -- "${R[@]}" --connect 127.0.0.1:PORT "$cr"
    wo="$TMP/lv$i.l" ro="$TMP/lv$i.c" wrc=$LRC rrc=$CRC
  else
    run "lv$i" "${R[@]}" --listen 0 "$lr" -- "${W[@]}" --connect 127.0.0.1:PORT "$cr"
    ro="$TMP/lv$i.l" wo="$TMP/lv$i.c" rrc=$LRC wrc=$CRC
  fi
  [ "$wrc" = 0 ] && [ "$rrc" = 0 ] || fail "live $combo: exit writer=$wrc reader=$rrc: $(cat "$wo" "$ro")"
  [ -n "$(event "$wo" live-appended)" ] || fail "live $combo: no live-appended line"
  check_done "$(event "$ro" done)" 1005 1005 "$LIVE" "live $combo reader"
  check_done "$(event "$wo" done)" 1005 1005 "$LIVE" "live $combo writer"
  [ "$(field "$(event "$wo" done)" closedBy)" = remote ] || fail "live $combo: writer did not see the remote close"
  echo "replicate-selftest: ok live +5, $1 listens as $2 (${SECS}s)"
done

# ---- sparse: only blocks 100..199
i=0
for roles in "--responder --initiator" "--initiator --responder"; do
  set -- $roles
  i=$((i + 1))
  run "sp$i" --dir "$TMP/sp$i-w" --seed "$SEED" --append 1000 --listen 0 "$1" \
    -- --dir "$TMP/sp$i-r" --key "$KEY" --sparse 100:200 --connect 127.0.0.1:PORT "$2"
  [ "$LRC" = 0 ] && [ "$CRC" = 0 ] || fail "sparse $roles: exit writer=$LRC reader=$CRC: $(cat "$TMP/sp$i.l" "$TMP/sp$i.c")"
  check_done "$(event "$TMP/sp$i.c" done)" 1000 100 "$SPARSE" "sparse reader ($2)"
  echo "replicate-selftest: ok sparse 100:200, writer listens as ${1#--} (${SECS}s)"
done

# ---- failures must exit non-zero (and never hang)
run bad1 --dir "$TMP/bad1-w" --seed "$SEED" --append 10 --listen 0 --initiator --timeout-ms 10000 \
  -- --dir "$TMP/bad1-r" --key "$KEY" --connect 127.0.0.1:PORT --initiator --timeout-ms 10000
[ "$LRC" = 1 ] && [ "$CRC" = 1 ] || fail "two initiators: exit $LRC/$CRC, expected 1/1"
[ -n "$(event "$TMP/bad1.c" error)" ] || fail "two initiators: no error line"
echo "replicate-selftest: ok two initiators fail: $(field "$(event "$TMP/bad1.c" error)" message) (${SECS}s)"

OTHER=$(printf 'ab%.0s' $(seq 32))
run bad2 --dir "$TMP/bad2-w" --seed "$SEED" --append 10 --listen 0 --responder --timeout-ms 10000 \
  -- --dir "$TMP/bad2-r" --key "$OTHER" --connect 127.0.0.1:PORT --initiator --timeout-ms 10000
[ "$LRC" = 1 ] && [ "$CRC" = 1 ] || fail "wrong key: exit $LRC/$CRC, expected 1/1"
echo "replicate-selftest: ok wrong key fails: $(field "$(event "$TMP/bad2.c" error)" message) / $(field "$(event "$TMP/bad2.l" error)" message) (${SECS}s)"

echo "replicate-selftest: all ok"
