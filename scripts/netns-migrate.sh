#!/usr/bin/env bash
# A live migration between two hosts on one machine: two network namespaces joined by a veth
# pair, the link shaped with tc netem (bandwidth and one-way delay, both directions), the
# destination listening in one namespace and the source migrating from the other. Prints the
# link, the destination's log and the source's report (measured and predicted), then removes
# everything it made. Needs root, iproute2 (ip, tc) and a built tree (npm run build).
#
#   sudo scripts/netns-migrate.sh [blmv migrate send options…]
#   RATE=100mbit DELAY=10ms sudo scripts/netns-migrate.sh --memory 128M --workload hot

set -euo pipefail

RATE=${RATE:-100mbit}
DELAY=${DELAY:-10ms}
SUBNET=${SUBNET:-10.231.0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLI="$ROOT/dist/src/cli/main.js"
SRC_NS="blmv-src-$$"
DST_NS="blmv-dst-$$"
SRC_IF="blmvs$$"
DST_IF="blmvd$$"
SRC_IP="$SUBNET.1"
DST_IP="$SUBNET.2"
PORT=7000

if [[ $(id -u) -ne 0 ]]; then echo "netns-migrate: must run as root (it creates network namespaces)" >&2; exit 2; fi
for tool in ip tc node; do
  command -v "$tool" >/dev/null || { echo "netns-migrate: $tool is not installed" >&2; exit 2; }
done
[[ -f $CLI ]] || { echo "netns-migrate: $CLI is missing: run npm run build first" >&2; exit 2; }

WORK=$(mktemp -d)
DEST_PID=""
cleanup() {
  [[ -n $DEST_PID ]] && kill "$DEST_PID" 2>/dev/null || true
  ip netns del "$SRC_NS" 2>/dev/null || true
  ip netns del "$DST_NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Two namespaces, one veth pair between them, an address on each end.
ip netns add "$SRC_NS"
ip netns add "$DST_NS"
ip link add "$SRC_IF" netns "$SRC_NS" type veth peer name "$DST_IF" netns "$DST_NS"
ip -n "$SRC_NS" addr add "$SRC_IP/24" dev "$SRC_IF"
ip -n "$DST_NS" addr add "$DST_IP/24" dev "$DST_IF"
# Each direction: RATE on the wire and DELAY one way (the round trip is twice DELAY), with netem;
# a kernel without sch_netem gets the rate alone, from a token bucket (tbf), and says so.
shaping="$RATE each way, $DELAY one-way delay (netem)"
for ns_if in "$SRC_NS:$SRC_IF" "$DST_NS:$DST_IF"; do
  ns=${ns_if%%:*} dev=${ns_if#*:}
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "$dev" up
  if ! ip netns exec "$ns" tc qdisc add dev "$dev" root netem delay "$DELAY" rate "$RATE" limit 10000 2>/dev/null; then
    ip netns exec "$ns" tc qdisc add dev "$dev" root tbf rate "$RATE" burst 64kb latency 100ms
    shaping="$RATE each way (tbf); no added delay: this kernel has no netem qdisc"
  fi
done

echo "link: $SRC_NS ($SRC_IP) <-> $DST_NS ($DST_IP), $shaping"
ip netns exec "$SRC_NS" tc qdisc show dev "$SRC_IF" | sed 's/^/  /'
if command -v ping >/dev/null; then ip netns exec "$SRC_NS" ping -c 3 -q "$DST_IP" | tail -1 | sed 's/^/  /'; fi

umask 077
head -c 24 /dev/urandom | base64 | tr '+/' '-_' >"$WORK/token"
ip netns exec "$DST_NS" node "$CLI" migrate listen --host "$DST_IP" --port "$PORT" --token-file "$WORK/token" --once >"$WORK/destination.log" 2>&1 &
DEST_PID=$!
for _ in $(seq 100); do
  grep -q '^listening on' "$WORK/destination.log" && break
  kill -0 "$DEST_PID" 2>/dev/null || { cat "$WORK/destination.log" >&2; exit 1; }
  sleep 0.1
done

set +e
ip netns exec "$SRC_NS" node "$CLI" migrate send --to "ws://$DST_IP:$PORT" --token-file "$WORK/token" \
  --memory 64M --workload uniform --working-set 32M --dirty-rate 4M --migrate-after 5 --duration 10 --verify "$@"
status=$?
set -e
wait "$DEST_PID" 2>/dev/null || true
DEST_PID=""
echo
echo "destination ($DST_NS):"
sed 's/^/  /' "$WORK/destination.log"
exit "$status"
