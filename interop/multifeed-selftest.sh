#!/usr/bin/env bash
# JS <-> JS self test of multifeed-peer.js (kappa-core 6 / multifeed 5.2.4) over TCP loopback:
#   1. non-live: A listens (--write local:1000), B connects (--write local:500); both end
#      with the same 2 feeds (1000/500), identical digests per key, expected content;
#   2. the same with initiator/responder swapped (and a custom, matching --shared-key);
#   3. live: one side creates a NEW writer 500 ms after connecting (--write-during-live),
#      the other waits with --expect-feeds/--expect-total (both listener directions);
#   4. different --shared-key values: both sides fail fast with an error line;
#   5. non-live with no feeds at all on either side ends cleanly (0 feeds);
#   6. live: the remote going away before the expectations are met is an error (exit 1).
# Not covered: a chain A<->B<->C (multifeed-peer.js serves exactly one connection).
# Run after ./setup.sh. Exits non-zero on the first failure. Takes ~10 s.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
PEER="node multifeed-peer.js"
SELFTEST=multifeed-selftest
# shellcheck source=lib/selftest.sh
source lib/selftest.sh
# js EXPR LINE... -> evaluates EXPR with a = JSON.parse(LINE1), b = JSON.parse(LINE2)
js () {
  local expr="$1"; shift
  node -e '
const [expr, ...lines] = process.argv.slice(1)
const [a, b] = lines.map((l) => (l ? JSON.parse(l) : null))
const byKey = (o) => Object.fromEntries(o.feeds.map((f) => [f.key, f]))
const r = eval(expr)
process.stdout.write(typeof r === "string" ? r : JSON.stringify(r))' "$expr" "$@"
}
# expected digest (lib/common ContentDigest) of the json blocks {"n":i,"who":NAME} i = A..B-1
digest_of () {
  node -e '
const { ContentDigest } = require("./lib/common"); const d = new ContentDigest()
const [who, a, b] = process.argv.slice(1)
for (let i = +a; i < +b; i++) d.update(Buffer.from(JSON.stringify({ n: i, who }) + "\n"))
process.stdout.write(d.digestHex())' "$@"
}
D1000="$(digest_of local 0 1000)"
D500="$(digest_of local 0 500)"

# check_pair NAME: both done, same key set, same length/digest per key on both sides
check_pair () {
  local name="$1" ld cd
  [ "$LRC" = 0 ] && [ "$CRC" = 0 ] || fail "$name: exit listener=$LRC connector=$CRC: $(cat "$TMP/$name.l" "$TMP/$name.c" "$TMP/$name.l.err" "$TMP/$name.c.err")"
  ld="$(event "$TMP/$name.l" done)"; cd="$(event "$TMP/$name.c" done)"
  [ -n "$ld" ] && [ -n "$cd" ] || fail "$name: missing done line"
  [ "$(js 'a.complete && b.complete' "$ld" "$cd")" = true ] || fail "$name: incomplete: $ld / $cd"
  [ "$(js 'JSON.stringify(a.feeds.map(f => [f.key, f.length, f.byteLength, f.digest])) === JSON.stringify(b.feeds.map(f => [f.key, f.length, f.byteLength, f.digest]))' "$ld" "$cd")" = true ] \
    || fail "$name: sides differ: $ld / $cd"
}

# ---- 1+2. non-live, A listens with 1000, B connects with 500
i=0
for roles in "--responder --initiator" "--initiator --responder"; do
  set -- $roles
  i=$((i + 1))
  SK=()
  [ "$i" = 2 ] && SK=(--shared-key "$(printf '5a%.0s' $(seq 32))")
  run "nl$i" --dir "$TMP/nl$i-a" --listen 0 "$1" --write local:1000 "${SK[@]}" \
    -- --dir "$TMP/nl$i-b" --connect 127.0.0.1:PORT "$2" --write local:500 "${SK[@]}"
  check_pair "nl$i"
  la="$(event "$TMP/nl$i.l" listening)"; ld="$(event "$TMP/nl$i.l" done)"; cd="$(event "$TMP/nl$i.c" done)"
  AKEY="$(js 'a.feeds[0].key' "$la")"
  [ "$(js 'a.feedCount' "$ld")" = 2 ] || fail "nl$i: feed count: $ld"
  [ "$(js "byKey(a)['$AKEY'].length === 1000 && byKey(a)['$AKEY'].digest === '$D1000'" "$ld")" = true ] || fail "nl$i: A's feed: $ld"
  [ "$(js "a.feeds.filter(f => f.key !== '$AKEY').every(f => f.length === 500 && f.digest === '$D500')" "$ld")" = true ] || fail "nl$i: B's feed: $ld"
  # localname: own writer "local" on each side, replicated feed null; writable likewise
  [ "$(js "byKey(a)['$AKEY'].localname === 'local' && byKey(a)['$AKEY'].writable && byKey(b)['$AKEY'].localname === null && !byKey(b)['$AKEY'].writable" "$ld" "$cd")" = true ] \
    || fail "nl$i: localname/writable: $ld / $cd"
  echo "multifeed-selftest: ok non-live 1000+500, listener ${1#--} (${SECS}s; replicateMs $(js 'a.replicateMs + "/" + b.replicateMs' "$ld" "$cd"))"
done

# ---- 3. live: the writer creates writer "late" after connecting; the reader expects 3 feeds / 170
i=0
for who in writer reader; do
  i=$((i + 1))
  W=(--dir "$TMP/lv$i-w" --live --write local:100 --write-during-live late:20 --timeout-ms 15000)
  R=(--dir "$TMP/lv$i-r" --live --write local:50 --expect-feeds 3 --expect-total 170 --timeout-ms 15000)
  if [ "$who" = writer ]; then
    run "lv$i" "${W[@]}" --listen 0 --responder -- "${R[@]}" --connect 127.0.0.1:PORT --initiator
    wo="$TMP/lv$i.l" ro="$TMP/lv$i.c"
  else
    run "lv$i" "${R[@]}" --listen 0 --initiator -- "${W[@]}" --connect 127.0.0.1:PORT --responder
    wo="$TMP/lv$i.c" ro="$TMP/lv$i.l"
  fi
  check_pair "lv$i"
  wd="$(event "$wo" done)"; rd="$(event "$ro" done)"; lw="$(event "$wo" live-written)"
  [ -n "$lw" ] || fail "live $who listens: no live-written line"
  [ "$(js 'a.closedBy === "remote" && b.closedBy === "local" && b.feedCount === 3 && b.totalLength === 170' "$wd" "$rd")" = true ] \
    || fail "live $who listens: $wd / $rd"
  LATE="$(js 'a.key' "$lw")"
  [ "$(js "byKey(a)['$LATE'].length === 20 && byKey(a)['$LATE'].digest === '$(digest_of late 0 20)' && byKey(a)['$LATE'].localname === null" "$rd")" = true ] \
    || fail "live $who listens: late feed on the reader: $rd"
  echo "multifeed-selftest: ok live, new writer during the session, $who listens (${SECS}s; reader replicateMs $(js 'a.replicateMs' "$rd"))"
done

# ---- 4. shared key mismatch: both sides fail fast (non-live and live, both role assignments)
K1="$(printf '11%.0s' $(seq 32))"; K2="$(printf '22%.0s' $(seq 32))"
i=0
for mode in "" --live; do
  for roles in "--responder --initiator" "--initiator --responder"; do
    set -- $roles
    i=$((i + 1))
    run "bad$i" --dir "$TMP/bad$i-a" --listen 0 "$1" $mode --write local:10 --shared-key "$K1" --timeout-ms 10000 \
      -- --dir "$TMP/bad$i-b" --connect 127.0.0.1:PORT "$2" $mode --write local:5 --shared-key "$K2" --timeout-ms 10000
    [ "$LRC" = 1 ] && [ "$CRC" = 1 ] || fail "shared key mismatch $mode $roles: exit $LRC/$CRC, expected 1/1: $(cat "$TMP/bad$i.l" "$TMP/bad$i.c")"
    le="$(event "$TMP/bad$i.l" error)"; ce="$(event "$TMP/bad$i.c" error)"
    [ -n "$le" ] && [ -n "$ce" ] || fail "shared key mismatch $mode $roles: missing error line"
    [ "$(js 'a.replicateMs < 1000 && b.replicateMs < 1000' "$le" "$ce")" = true ] || fail "shared key mismatch $mode $roles: not fast: $le / $ce"
    echo "multifeed-selftest: ok shared key mismatch ${mode:-non-live} (${SECS}s): listener ${1#--} \"$(js a.message "$le")\" ($(js a.replicateMs "$le") ms), connector ${2#--} \"$(js a.message "$ce")\" ($(js a.replicateMs "$ce") ms)"
  done
done

# ---- 5. non-live, nothing on either side
run empty --dir "$TMP/empty-a" --listen 0 --initiator -- --dir "$TMP/empty-b" --connect 127.0.0.1:PORT --responder
check_pair empty
[ "$(js 'a.feedCount === 0 && b.feedCount === 0' "$(event "$TMP/empty.l" done)" "$(event "$TMP/empty.c" done)")" = true ] || fail "empty: feed count"
echo "multifeed-selftest: ok non-live with no feeds (${SECS}s)"

# ---- 6. live: remote leaves (its own timeout) before the expectations are met -> error
run early --dir "$TMP/early-a" --listen 0 --responder --live --write local:10 --timeout-ms 1500 \
  -- --dir "$TMP/early-b" --connect 127.0.0.1:PORT --initiator --live --expect-feeds 5 --timeout-ms 10000
[ "$LRC" = 2 ] && [ "$CRC" = 1 ] || fail "early close: exit $LRC/$CRC, expected 2/1: $(cat "$TMP/early.l" "$TMP/early.c")"
echo "multifeed-selftest: ok live remote closed early: \"$(js a.message "$(event "$TMP/early.c" error)")\" (${SECS}s)"

echo "multifeed-selftest: all ok"
