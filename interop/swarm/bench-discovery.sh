#!/usr/bin/env bash
# LAN discovery benchmark (docs/benchmarks.md): time from start to the first completed sync between two
# fresh peers on a LAN of network namespaces, and how many peers one node keeps syncing at once.
# Run as root (ip netns); B=path/to/kappa (release), N=number of serve peers (default 12).
# Traffic stays in the namespaces it makes (10.78.0.0/24), which it deletes on exit.
set -eu
B=${B:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/kappa}
N=${N:-12}
K=$(printf '11%.0s' {1..32})
T=$(mktemp -d)
ip netns add kbsw; ip -n kbsw link add br0 type bridge mcast_snooping 0; ip -n kbsw link set br0 up
cleanup () { for i in $(seq 0 $N); do ip netns del kbh$i 2>/dev/null || true; done; ip netns del kbsw; rm -rf "$T"; }
trap cleanup EXIT
for i in $(seq 0 $N); do
  ip netns add kbh$i; ip -n kbsw link add p$i type veth peer name eth0 netns kbh$i; ip -n kbsw link set p$i master br0 up
  ip -n kbh$i addr add 10.78.0.$((i+1))/24 dev eth0; ip -n kbh$i link set eth0 multicast on up; ip -n kbh$i link set lo up; ip -n kbh$i route add 224.0.0.0/4 dev eth0
done
echo "first sync, fresh peers (serve --discover started, then sync --discover at once):"
for r in 1 2 3 4 5; do
  rm -rf $T/a $T/b; $B --dir $T/a --shared-key $K put a 1 >/dev/null; $B --dir $T/b --shared-key $K put b 2 >/dev/null
  t0=$(date +%s.%N)
  ip netns exec kbh0 $B --dir $T/a --shared-key $K serve --listen 0.0.0.0:0 --discover > $T/s.out 2>&1 &
  sp=$!
  ip netns exec kbh1 $B --dir $T/b --shared-key $K sync --discover --discover-timeout-ms 10000 > $T/c.out 2>&1
  t1=$(date +%s.%N)
  kill -INT $sp; wait $sp || true
  echo "  run $r: $(echo "$t1 - $t0" | bc) s ($(grep -c synced $T/c.out) sync)"
done
echo "one node among $N serve --discover peers:"
for i in $(seq 0 $((N-1))); do
  rm -rf $T/n$i; $B --dir $T/n$i --shared-key $K put k$i $i >/dev/null
  ip netns exec kbh$i $B --dir $T/n$i --shared-key $K --json serve --listen 0.0.0.0:0 --discover > $T/n$i.out 2>&1 &
  pids[$i]=$!
done
sleep 8
pid0=${pids[0]}
echo "  node 0 after 8 s: dialled $(grep -c peer_dialled $T/n0.out), accepted $(grep -c '"peer_connected"' $T/n0.out), failed $(grep -c peer_failed $T/n0.out); RSS $(ps -o rss= -p $pid0) KiB"
for i in $(seq 0 $((N-1))); do kill -INT ${pids[$i]} || true; done
for i in $(seq 0 $((N-1))); do wait ${pids[$i]} || true; done
for i in $(seq 0 $((N-1))); do echo -n "$($B --dir $T/n$i --shared-key $K --json table | wc -l) "; done; echo "keys in each node's table after stopping"
