# Shared by the JS <-> JS self tests (kv, multifeed, replicate). Source it after setting
# SELFTEST (the test's name) and PEER (the command that starts one peer), from interop/.
# Gives: TMP (removed on exit), fail MSG, event FILE NAME, and run (below).
TMP="$(mktemp -d "${TMPDIR:-/tmp}/kappa-rs-$SELFTEST.XXXXXX")"
LPID=""
cleanup () {
  if [ -n "$LPID" ]; then kill "$LPID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
fail () { echo "$SELFTEST: FAIL: $*" >&2; exit 1; }
# event FILE NAME -> last line of FILE whose "event" is NAME
event () { grep "\"event\":\"$2\"" "$1" | tail -1 || true; }

# run NAME LISTENER_ARGS... -- CONNECTOR_ARGS...   ("PORT" in connector args is replaced)
# Starts the listener, waits for its port, runs the connector; sets CRC/LRC (exit codes),
# SECS (the connector's run time); the outputs are $TMP/NAME.l and $TMP/NAME.c (+ .err).
run () {
  local name="$1"; shift
  local l=() c=()
  while [ "$1" != "--" ]; do l+=("$1"); shift; done
  shift; c=("$@")
  local lo="$TMP/$name.l" co="$TMP/$name.c"
  : > "$lo"
  $PEER "${l[@]}" > "$lo" 2> "$lo.err" &
  LPID=$!
  local port=""
  for _ in $(seq 100); do
    port="$(grep -o '"event":"listening","port":[0-9]*' "$lo" | grep -o '[0-9]*$' || true)"
    [ -n "$port" ] && break
    kill -0 "$LPID" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$port" ] || fail "$name: listener did not start: $(cat "$lo" "$lo.err")"
  local t0; t0=$(date +%s%N)
  set +e
  $PEER "${c[@]//PORT/$port}" > "$co" 2> "$co.err"
  CRC=$?
  wait "$LPID"
  LRC=$?
  set -e
  LPID=""
  SECS=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
}
