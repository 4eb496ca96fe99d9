#!/usr/bin/env bash
# JS-only self test of bridge-peer.js: a chain A <-> BRIDGE <-> C, where A and C are
# multifeed-peer.js (live). A listens (--responder), the bridge dials A (initiator) and
# listens, C dials the bridge (--initiator).
#   1. A writes a:10 and expects everything; C writes c:7 up front and creates writer
#      "late" during the session (late:5): "late" (born on the bridge's listen side) and c
#      reach A, a reaches C. Bridge with --close-when-synced closes C's session itself.
#   2. mirror: A (dialled side) creates "late" during the session and waits for the remote;
#      C expects everything; the bridge also has its own writer mid:3.
#   3. as 1 without --close-when-synced: the bridge stays up until its timeout after done
#      (closed/closedBy "timeout", exit 0), which then releases C.
#   4. shared-key mismatch between A and the bridge: both exit 1.
# In every successful case all three final reports have identical key/length/digest lists.
# Run after ./setup.sh. Exits non-zero on the first failure. Takes ~8 s.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/kappa-rs-bridge-selftest.XXXXXX")"
APID=""
BPID=""
cleanup () {
  if [ -n "$APID" ]; then kill "$APID" 2>/dev/null || true; fi
  if [ -n "$BPID" ]; then kill "$BPID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
fail () { echo "bridge-selftest: FAIL: $*" >&2; exit 1; }
event () { grep "\"event\":\"$2\"" "$1" | tail -1 || true; }
js () {
  local expr="$1"; shift
  node -e '
const [expr, ...lines] = process.argv.slice(1)
const [a, b, c] = lines.map((l) => (l ? JSON.parse(l) : null))
const sig = (o) => JSON.stringify(o.feeds.map((f) => [f.key, f.length, f.byteLength, f.digest]))
const r = eval(expr)
process.stdout.write(typeof r === "string" ? r : JSON.stringify(r))' "$expr" "$@"
}
wait_port () { # FILE PID -> port of the first listening line
  local port=""
  for _ in $(seq 100); do
    port="$(grep -o '"event":"listening","port":[0-9]*' "$1" | grep -o '[0-9]*$' || true)"
    [ -n "$port" ] && break
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  echo "$port"
}

# chain NAME A_ARGS... -- BRIDGE_ARGS... -- C_ARGS...
# Leaves $TMP/NAME.{a,b,c} (stdout), ARC/BRC/CRC, SECS (bridge start .. all exited).
chain () {
  local name="$1"; shift
  local a=() b=() c=()
  while [ "$1" != "--" ]; do a+=("$1"); shift; done; shift
  while [ "$1" != "--" ]; do b+=("$1"); shift; done; shift
  c=("$@")
  local o="$TMP/$name"
  : > "$o.a"; : > "$o.b"
  node multifeed-peer.js --dir "$o-a" --listen 0 --responder --live "${a[@]}" > "$o.a" 2> "$o.a.err" &
  APID=$!
  local pa; pa="$(wait_port "$o.a" "$APID")"
  [ -n "$pa" ] || fail "$name: A did not start: $(cat "$o.a" "$o.a.err")"
  local t0; t0=$(date +%s%N)
  node bridge-peer.js --dir "$o-b" --listen 0 --connect "127.0.0.1:$pa" "${b[@]}" > "$o.b" 2> "$o.b.err" &
  BPID=$!
  local pb; pb="$(wait_port "$o.b" "$BPID")"
  [ -n "$pb" ] || fail "$name: bridge did not start: $(cat "$o.b" "$o.b.err")"
  set +e
  node multifeed-peer.js --dir "$o-c" --connect "127.0.0.1:$pb" --initiator --live "${c[@]}" > "$o.c" 2> "$o.c.err"
  CRC=$?
  wait "$BPID"; BRC=$?
  wait "$APID"; ARC=$?
  set -e
  APID=""; BPID=""
  SECS=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
}

# check_chain NAME FEEDS TOTAL: all exit 0, identical final reports with FEEDS feeds / TOTAL
check_chain () {
  local name="$1" o="$TMP/$1"
  [ "$ARC" = 0 ] && [ "$BRC" = 0 ] && [ "$CRC" = 0 ] || fail "$name: exit A=$ARC bridge=$BRC C=$CRC: $(cat "$o.a" "$o.b" "$o.c" "$o.a.err" "$o.b.err" "$o.c.err")"
  AD="$(event "$o.a" done)"; BD="$(event "$o.b" done)"; BC="$(event "$o.b" closed)"; CD="$(event "$o.c" done)"
  [ -n "$AD" ] && [ -n "$BD" ] && [ -n "$BC" ] && [ -n "$CD" ] || fail "$name: missing done/closed line"
  [ "$(js 'sig(a) === sig(b) && sig(b) === sig(c) && a.complete && b.complete && c.complete' "$AD" "$BC" "$CD")" = true ] \
    || fail "$name: final reports differ: $AD / $BC / $CD"
  [ "$(js "a.feedCount === $2 && a.totalLength === $3 && b.feedCount === $2 && b.totalLength === $3" "$BD" "$BC")" = true ] \
    || fail "$name: bridge done: $BD"
}

# ---- 1. late writer on the bridge's listen side (C), reader A on the dial side
chain c1 --write a:10 --expect-feeds 3 --expect-total 22 --timeout-ms 15000 \
  -- --expect-feeds 3 --expect-total 22 --close-when-synced --timeout-ms 15000 \
  -- --write c:7 --write-during-live late:5 --timeout-ms 15000
check_chain c1 3 22
LATE="$(js 'a.key' "$(event "$TMP/c1.c" live-written)")"
[ "$(js "a.feeds.some(f => f.key === '$LATE' && f.length === 5) && a.closedBy === 'local' && b.closedBy === 'remote'" "$AD" "$CD")" = true ] \
  || fail "c1: late feed on A / closedBy: $AD / $CD"
[ "$(js 'a.closedBy === "mixed" && a.connections.listen.closedBy === "local" && a.connections.dial.closedBy === "remote"' "$BC")" = true ] || fail "c1: bridge closed: $BC"
echo "bridge-selftest: ok C creates a writer during the session, A gets it through the bridge (${SECS}s; bridge done at $(js a.elapsedMs "$BD") ms)"

# ---- 2. mirror: late writer on the dial side (A), reader C; the bridge writes mid:3
chain c2 --write a:10 --write-during-live late:5 --timeout-ms 15000 \
  -- --write mid:3 --expect-feeds 4 --expect-total 25 --close-when-synced --timeout-ms 15000 \
  -- --write c:7 --expect-feeds 4 --expect-total 25 --timeout-ms 15000
check_chain c2 4 25
LATE="$(js 'a.key' "$(event "$TMP/c2.a" live-written)")"
MID="$(js 'a.feeds.find(f => f.localname === "mid").key' "$BD")"
[ "$(js "a.feeds.some(f => f.key === '$LATE' && f.length === 5) && a.feeds.some(f => f.key === '$MID' && f.length === 3) && b.closedBy === 'remote' && a.closedBy === 'local'" "$CD" "$AD")" = true ] \
  || fail "c2: late/mid on C / closedBy: $CD / $AD"
echo "bridge-selftest: ok mirror: A creates a writer during the session, C gets it; bridge's own feed reaches both (${SECS}s)"

# ---- 3. no --close-when-synced: after done the bridge waits for its timeout (exit 0)
chain c3 --write a:10 --expect-feeds 3 --expect-total 22 --timeout-ms 15000 \
  -- --expect-feeds 3 --expect-total 22 --timeout-ms 2500 \
  -- --write c:7 --write-during-live late:5 --timeout-ms 15000
check_chain c3 3 22
[ "$(js 'a.closedBy === "timeout" && b.closedBy === "remote"' "$BC" "$CD")" = true ] || fail "c3: $BC / $CD"
echo "bridge-selftest: ok without --close-when-synced the bridge leaves at its timeout after done (${SECS}s)"

# ---- 4. shared-key mismatch on the A <-> bridge link
K1="$(printf '11%.0s' $(seq 32))"; K2="$(printf '22%.0s' $(seq 32))"
chain c4 --write a:10 --shared-key "$K1" --timeout-ms 5000 \
  -- --shared-key "$K2" --expect-feeds 1 --timeout-ms 5000 \
  -- --shared-key "$K2" --timeout-ms 1500
[ "$ARC" = 1 ] && [ "$BRC" = 1 ] || fail "c4: exit A=$ARC bridge=$BRC, expected 1/1: $(cat "$TMP/c4.a" "$TMP/c4.b")"
[ "$(js 'a.side === "dial"' "$(event "$TMP/c4.b" error)")" = true ] || fail "c4: $(cat "$TMP/c4.b")"
echo "bridge-selftest: ok shared-key mismatch: bridge \"$(js a.message "$(event "$TMP/c4.b" error)")\" (C exit $CRC)"

echo "bridge-selftest: all ok"
