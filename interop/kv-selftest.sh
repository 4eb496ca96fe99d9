#!/usr/bin/env bash
# JS <-> JS self test of kv-peer.js (kappa-core 6 + kappa-view-kv 2.0.2 on memdb, non-live TCP):
#   1. A listens with --put a=1 --put b=2, B connects with --put b=3: both tables have a
#      (1 head) and b forked (2 heads: A's b=2 and B's b=3), identical on both sides;
#   2. same dirs, B puts b=4 (links = both heads): b has 1 head (4) on both sides;
#   3. same dirs, roles swapped (the listener is the initiator), no puts: tables unchanged;
#   4. two puts of one key in one run form a chain (1 head); JSON / string VALUE parsing;
#      a custom, matching --shared-key;
#   5. --expect-keys above the key count -> exit 1; different --shared-key -> both exit 1.
# Run after ./setup.sh. Exits non-zero on the first failure. Takes ~4 s.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
PEER="node kv-peer.js"
SELFTEST=kv-selftest
# shellcheck source=lib/selftest.sh
source lib/selftest.sh
# js EXPR LINE... -> evaluates EXPR with a, b = the parsed JSON lines
js () {
  local expr="$1"; shift
  node -e '
const [expr, ...lines] = process.argv.slice(1)
const [a, b] = lines.map((l) => (l ? JSON.parse(l) : null))
const r = eval(expr)
process.stdout.write(typeof r === "string" ? r : JSON.stringify(r))' "$expr" "$@"
}

# check_pair NAME: both exit 0 with done, identical tables; sets LD/CD (done lines)
check_pair () {
  local name="$1"
  [ "$LRC" = 0 ] && [ "$CRC" = 0 ] || fail "$name: exit listener=$LRC connector=$CRC: $(cat "$TMP/$name.l" "$TMP/$name.c" "$TMP/$name.l.err" "$TMP/$name.c.err")"
  LD="$(event "$TMP/$name.l" done)"; CD="$(event "$TMP/$name.c" done)"
  [ -n "$LD" ] && [ -n "$CD" ] || fail "$name: missing done line"
  [ "$(js 'JSON.stringify(a.table) === JSON.stringify(b.table)' "$LD" "$CD")" = true ] || fail "$name: tables differ: $LD / $CD"
}

A=(--dir "$TMP/a" --timeout-ms 10000)
B=(--dir "$TMP/b" --timeout-ms 10000)

# ---- 1. fork
run r1 "${A[@]}" --listen 0 --responder --put a=1 --put b=2 -- "${B[@]}" --connect 127.0.0.1:PORT --initiator --put b=3 --expect-keys 2
check_pair r1
AB2="$(js 'a.puts[1].id' "$LD")"; BB3="$(js 'b.puts[0].id' "$LD" "$CD")"; AA1="$(js 'a.puts[0].id' "$LD")"
[ "$(js "a.keys === 2 && a.feeds === 2 && JSON.stringify(a.table.a) === JSON.stringify([{id: '$AA1', value: 1}])" "$LD")" = true ] || fail "r1: key a: $LD"
[ "$(js "JSON.stringify(a.table.b) === JSON.stringify([{id: '$AB2', value: 2}, {id: '$BB3', value: 3}].sort((x, y) => x.id < y.id ? -1 : 1))" "$LD")" = true ] || fail "r1: key b not forked: $LD"
[ "$(js "/^[0-9a-f]{64}@0\$/.test('$BB3') && '$AB2'.endsWith('@1')" "$LD")" = true ] || fail "r1: id format: $AB2 $BB3"
echo "kv-selftest: ok fork: b has 2 heads on both sides (${SECS}s; replicateMs $(js 'a.replicateMs + "/" + b.replicateMs' "$LD" "$CD"))"

# ---- 2. merge: b=4 links both heads
run r2 "${A[@]}" --listen 0 --responder -- "${B[@]}" --connect 127.0.0.1:PORT --initiator --put b=4 --expect-keys 2
check_pair r2
BB4="$(js 'a.puts[0].id' "$CD")"
[ "$(js "JSON.stringify(a.puts[0].links) === JSON.stringify(['$AB2', '$BB3'].sort())" "$CD")" = true ] || fail "r2: links of b=4: $CD"
[ "$(js "JSON.stringify(a.table.b) === JSON.stringify([{id: '$BB4', value: 4}]) && a.table.a.length === 1" "$LD")" = true ] || fail "r2: b not merged: $LD"
echo "kv-selftest: ok merge: b has 1 head (4) on both sides (${SECS}s)"

# ---- 3. roles swapped, nothing new: unchanged
run r3 "${B[@]}" --listen 0 --initiator -- "${A[@]}" --connect 127.0.0.1:PORT --responder --expect-keys 2
check_pair r3
[ "$(js "JSON.stringify(a.table.b) === JSON.stringify([{id: '$BB4', value: 4}])" "$LD")" = true ] || fail "r3: $LD"
echo "kv-selftest: ok no-op sync with roles swapped (${SECS}s)"

# ---- 4. chain within one run + VALUE parsing, custom shared key
SK="$(printf '5a%.0s' $(seq 32))"
run r4 --dir "$TMP/c" --listen 0 --initiator --shared-key "$SK" --put k=1 --put k=2 --put 's=hello world' --put 'o={"x":[1,2]}' --put 'q="7"' \
  -- --dir "$TMP/d" --connect 127.0.0.1:PORT --responder --shared-key "$SK" --expect-keys 4
check_pair r4
[ "$(js 'a.table.k.length === 1 && a.table.k[0].value === 2 && a.table.k[0].id.endsWith("@1") && a.puts[1].links[0] === a.puts[0].id' "$LD")" = true ] || fail "r4: chain: $LD"
[ "$(js 'a.table.s[0].value === "hello world" && JSON.stringify(a.table.o[0].value) === "{\"x\":[1,2]}" && a.table.q[0].value === "7"' "$LD")" = true ] || fail "r4: values: $LD"
echo "kv-selftest: ok chain in one run, JSON/string values, custom shared key (${SECS}s)"

# ---- 5. failures
run r5 --dir "$TMP/e" --listen 0 --responder --put x=1 -- --dir "$TMP/f" --connect 127.0.0.1:PORT --initiator --expect-keys 2
[ "$LRC" = 0 ] && [ "$CRC" = 1 ] || fail "r5: exit $LRC/$CRC, expected 0/1"
[ "$(js 'a.message === "expected at least 2 keys, got 1" && Object.keys(a.table).length === 1' "$(event "$TMP/r5.c" error)")" = true ] || fail "r5: $(cat "$TMP/r5.c")"
run r6 --dir "$TMP/g" --listen 0 --responder --put x=1 --shared-key "$SK" --timeout-ms 10000 \
  -- --dir "$TMP/h" --connect 127.0.0.1:PORT --initiator --put y=1 --timeout-ms 10000
[ "$LRC" = 1 ] && [ "$CRC" = 1 ] || fail "r6: shared key mismatch: exit $LRC/$CRC, expected 1/1"
echo "kv-selftest: ok --expect-keys failure and shared-key mismatch (exit 1)"

echo "kv-selftest: all ok"
