#!/usr/bin/env bash
# Lab benchmark (issue 6): TCP goodput (iperf3) and ping RTT through the comparing proxy, against a direct veth
# path measured in the same run. Needs root, iperf3, ping; uses the release build of colo-proxy.
#
#   Tools/lab-bench.sh [seconds-per-iperf-run (default 5)]
#   OFFLOAD=off Tools/lab-bench.sh      # TAP ports without checksum/TSO offload (every frame MTU-sized)
#
# Through the proxy: client namespace --TAP-- colo-proxy run --TAP-- primary and secondary namespaces (clones:
# same MAC and address, both running `iperf3 -s`). Direct: a veth pair between two namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
offload=${OFFLOAD:-on}
[[ $offload == on || $offload == off ]] || { echo "lab-bench: OFFLOAD must be on or off, not '$offload'"; exit 2; }
[ "$(id -u)" = 0 ] || { echo "lab-bench: needs root (namespaces and TAP devices)"; exit 2; }
for tool in iperf3 ping ip; do command -v $tool >/dev/null || { echo "lab-bench: $tool not found (Tools/install-deps.sh)"; exit 2; }; done
if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then export PATH="/opt/swift/usr/bin:$PATH"; fi
bin=${COLO_PROXY:-.build/release/colo-proxy}
[ -x "$bin" ] || swift build -c release --product colo-proxy 2>&1 | tail -n 1

tag=b$$
cc=lbc-$tag cp=lbp-$tag cs=lbs-$tag dc=lbdc-$tag ds=lbds-$tag
proxy_pid=""
cleanup() {
    [ -n "$proxy_pid" ] && kill "$proxy_pid" 2>/dev/null && wait "$proxy_pid" 2>/dev/null || true
    [ -n "${web:-}" ] && rm -rf "$web"
    for ns in $cc $cp $cs $dc $ds; do ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del $ns 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

for ns in $cc $cp $cs $dc $ds; do
    ip netns add $ns
    ip -n $ns link set lo up
    # DAD and router solicitations carry random nonces: two clones would rightly be reported as diverging.
    for setting in accept_dad=0 enhanced_dad=0 router_solicitations=0; do
        ip netns exec $ns sysctl -qw net.ipv6.conf.all.$setting net.ipv6.conf.default.$setting >/dev/null 2>&1 || true
    done
done

# The proxied path.
"$bin" run --no-control --client tap,id=c,ifname=tc$tag,offload=$offload --primary tap,id=p,ifname=tp$tag,offload=$offload \
    --secondary tap,id=s,ifname=ts$tag,offload=$offload >/tmp/lab-bench-$tag.log 2>&1 &
proxy_pid=$!
for _ in $(seq 50); do ip link show ts$tag >/dev/null 2>&1 && break; sleep 0.1; done
place() { # device namespace mac address
    ip link set $1 netns $2
    ip -n $2 link set $1 address $3
    ip -n $2 addr add $4/24 dev $1
    ip -n $2 link set $1 up
}
place tc$tag $cc 52:54:00:00:00:01 10.11.0.1
place tp$tag $cp 52:54:00:00:00:02 10.11.0.2
place ts$tag $cs 52:54:00:00:00:02 10.11.0.2

# The direct path.
ip link add vc$tag type veth peer name vs$tag
ip link set vc$tag netns $dc
ip link set vs$tag netns $ds
ip -n $dc addr add 10.12.0.1/24 dev vc$tag
ip -n $ds addr add 10.12.0.2/24 dev vs$tag
ip -n $dc link set vc$tag up
ip -n $ds link set vs$tag up

for ns in $cp $cs $ds; do ip netns exec $ns iperf3 -s -D -1 >/dev/null 2>&1 || true; done
# replica → client: an HTTP download of one file from identical servers (iperf3 -R is not deterministic across
# two replicas: its servers' streams and result messages differ, which the comparer rightly reports).
web=$(mktemp -d /tmp/lab-bench-web.XXXXXX)
truncate -s 1G $web/big.bin
server='import functools, http.server, socket
socket.getfqdn = lambda *a: "replica"
H = http.server.SimpleHTTPRequestHandler
H.date_time_string = lambda self, t=None: "Thu, 01 Jan 2026 00:00:00 GMT"
H.log_message = lambda self, *a: None
http.server.ThreadingHTTPServer(("0.0.0.0", 8000), functools.partial(H, directory="'$web'")).serve_forever()'
for ns in $cp $cs $ds; do ip netns exec $ns python3 -c "$server" >/dev/null 2>&1 & done
sleep 1

goodput() { # namespace address extra-flags → Mbit/s received
    ip netns exec $1 iperf3 -c $2 -t "$seconds" -J --repeating-payload $3 2>/dev/null |
        python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f" % (d["end"]["sum_received"]["bits_per_second"]/1e6))' ||
        echo "failed"
}

echo "lab-bench: $(nproc) cores, iperf3 runs of ${seconds} s, one TCP stream, TAP offload=$offload"
download() { # namespace address → Mbit/s
    ip netns exec $1 curl -s --max-time 60 -o /dev/null -w '%{speed_download}' http://$2:8000/big.bin |
        python3 -c 'import sys; print("%.0f" % (float(sys.stdin.read())*8/1e6))' || echo failed
}
up_proxy=$(goodput $cc 10.11.0.2 "")
down_proxy=$(download $cc 10.11.0.2)
up_direct=$(goodput $dc 10.12.0.2 "")
down_direct=$(download $dc 10.12.0.2)

rtt() { # namespace address → "p50 p99" in microseconds
    ip netns exec $1 ping -c 500 -i 0.002 -q -n $2 >/dev/null 2>&1 || true
    ip netns exec $1 ping -c 1000 -i 0.002 -n $2 2>/dev/null | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' |
        python3 -c 'import sys; v=sorted(float(x)*1000 for x in sys.stdin); n=len(v); print("%.0f %.0f" % (v[n//2], v[min(n-1,int(n*0.99))]) if n else "failed failed")'
}
read -r p50_proxy p99_proxy <<<"$(rtt $cc 10.11.0.2)"
read -r p50_direct p99_direct <<<"$(rtt $dc 10.12.0.2)"

echo
echo "| path | client → replica (iperf3) | replica → client (HTTP, 1 GiB) | ping p50 | ping p99 |"
echo "|---|---|---|---|---|"
echo "| direct veth | $up_direct Mbit/s | $down_direct Mbit/s | $p50_direct µs | $p99_direct µs |"
echo "| through colo-proxy (TAP, comparing) | $up_proxy Mbit/s | $down_proxy Mbit/s | $p50_proxy µs | $p99_proxy µs |"
if [[ $p50_proxy =~ ^[0-9]+$ && $p50_direct =~ ^[0-9]+$ ]]; then
    echo "added ping p50: $((p50_proxy - p50_direct)) µs"
fi
log=/tmp/lab-bench-$tag.log
http=$(grep '"event":"divergence"' $log | grep -c '"sport":8000' || true)
other=$(grep '"event":"divergence"' $log | grep -vc '"sport":8000' || true)
echo "divergence events: $http on the HTTP download, $other others (iperf3's control connection carries each"
echo "server's own results, which differ; reasons: $(grep -o '"reason":"[a-z-]*"' $log | sort | uniq -c | tr -s ' ' | tr '\n' ' ')) — $log"
