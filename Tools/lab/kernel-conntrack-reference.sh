#!/usr/bin/env bash
# Records what the Linux kernel's own connection tracker says about every
# packet of a small, fixed mix of traffic, as a reference for our tracker.
#
# usage: sudo Tools/lab/kernel-conntrack-reference.sh OUTDIR
#
# Topology (namespaces klab-{c,r,s}-PID, removed on exit):
#   client  c0 52:54:00:30:00:01 10.30.0.1/24   fd00:c030::1/64
#   router  rc 52:54:00:30:00:fe 10.30.0.254/24 fd00:c030::fe/64   (forwarding)
#           rs 52:54:00:31:00:fe 10.31.0.254/24 fd00:c031::fe/64
#   server  s0 52:54:00:31:00:02 10.31.0.2/24   fd00:c031::2/64
# MTU 1500 everywhere, all offloads off (real checksums, no GRO/TSO).
# In the router, mangle PREROUTING (after defrag at -400 and conntrack at -200,
# before routing and the TTL decrement) jumps to a chain that NFLOGs every
# packet once (group 5) with a prefix naming the kernel's classification:
#   inv untracked new est est-rpl rel rel-rpl  (+ new-rpl/other: never expected)
# Captures (all started before the traffic, stopped with SIGINT after it):
#   OUTDIR/nflog.pcap             tcpdump -i nflog:5 in the router (link type 239)
#   OUTDIR/ingress-client.pcap    tcpdump -Q in on rc (Ethernet, original fragments)
#   OUTDIR/ingress-server.pcap    tcpdump -Q in on rs
# Then Tools/lab/kernel_reference.py writes
#   OUTDIR/trace.pcap             the ingress frames in the kernel's log order
#   OUTDIR/kernel-states.tsv      index state direction summary, one per frame
# and the trace is checked with tshark (no malformed packets; the only bad
# checksum is the deliberate one, marked "bad-csum" in the summary).
# Also kept: OUTDIR/conntrack-final.txt (conntrack -L in the router at the end).
set -euo pipefail

prog=kernel-conntrack-reference
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/../lib/netns.sh
source "$repo_root/Tools/lib/netns.sh"
# shellcheck disable=SC2034  # read by netns.sh
NETNS_PROG=$prog

die() { echo "$prog: error: $*" >&2; exit 1; }
say() { echo "$prog: $*" >&2; }

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }

netns_require_root "$prog"
netns_require_tools "$prog" ip ss iptables ip6tables tcpdump tshark ethtool ping curl \
    python3 timeout sysctl conntrack

mkdir -p "$1"
out_dir=$(cd "$1" && pwd)
traffic=(python3 "$here/kernel_traffic.py")

netns_workdir klab

# ------------------------------------------------------------------ topology
ns_c=$(netns_name klab-c)
ns_r=$(netns_name klab-r)
ns_s=$(netns_name klab-s)
for ns in "$ns_c" "$ns_r" "$ns_s"; do
    netns_add "$ns"
    # no DAD at all, link-local included: addresses are usable at link-up
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
        net.ipv6.conf.default.accept_dad=0
done

ip -n "$ns_c" link add c0 type veth peer name rc netns "$ns_r"
ip -n "$ns_s" link add s0 type veth peer name rs netns "$ns_r"

# Client and server links stay down (no carrier on the router side either)
# until every capture runs, so that even the first MLD report is recorded.
setup_if() { # ns if mac addr4 addr6 up|down
    ip -n "$1" link set "$2" address "$3" mtu 1500
    ip -n "$1" addr add "$4" dev "$2"
    ip -n "$1" addr add "$5" dev "$2" nodad
    ip netns exec "$1" ethtool -K "$2" rx off tx off sg off tso off gso off gro off \
        >/dev/null 2>&1 || true
    if ip netns exec "$1" ethtool -k "$2" | grep -Eq \
        '^(rx-checksumming|tx-checksumming|generic-segmentation-offload|tcp-segmentation-offload|generic-receive-offload): on'; then
        die "could not turn offloads off on $2 in $1"
    fi
    [ "$6" = down ] || ip -n "$1" link set "$2" up
}
setup_if "$ns_c" c0 52:54:00:30:00:01 10.30.0.1/24 fd00:c030::1/64 down
setup_if "$ns_r" rc 52:54:00:30:00:fe 10.30.0.254/24 fd00:c030::fe/64 up
setup_if "$ns_r" rs 52:54:00:31:00:fe 10.31.0.254/24 fd00:c031::fe/64 up
setup_if "$ns_s" s0 52:54:00:31:00:02 10.31.0.2/24 fd00:c031::2/64 down

rsys() { ip netns exec "$ns_r" sysctl -qw "$@"; }
rsys net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

# ------------------------------------------------------- conntrack + NFLOG
# Built-in on some kernels; modprobe is best effort, the check below is not.
for m in nf_conntrack nf_defrag_ipv4 nf_defrag_ipv6 nfnetlink_log xt_conntrack xt_NFLOG; do
    modprobe -q "$m" 2>/dev/null || true
done
for ipt in iptables ip6tables; do
    rt() { ip netns exec "$ns_r" "$ipt" -w 5 -t mangle "$@"; }
    rt -N KLOG || die "$ipt: cannot create a mangle chain"
    rt -A PREROUTING -j KLOG
    while read -r state dir prefix; do
        cond=(-m conntrack --ctstate "$state")
        [ "$dir" = - ] || cond+=(--ctdir "$dir")
        rt -A KLOG "${cond[@]}" -j NFLOG --nflog-group 5 --nflog-threshold 1 \
            --nflog-prefix "$prefix" \
            || die "$ipt: conntrack match or NFLOG target not available"
        rt -A KLOG "${cond[@]}" -j RETURN
    done <<'EOF'
INVALID - inv
UNTRACKED - untracked
NEW ORIGINAL new
NEW REPLY new-rpl
ESTABLISHED ORIGINAL est
ESTABLISHED REPLY est-rpl
RELATED ORIGINAL rel
RELATED REPLY rel-rpl
EOF
    rt -A KLOG -j NFLOG --nflog-group 5 --nflog-threshold 1 --nflog-prefix other
done
# conntrack is registered in the namespace now (the rules need it)
rsys net.netfilter.nf_conntrack_tcp_loose=1 net.netfilter.nf_conntrack_tcp_be_liberal=0 \
    net.netfilter.nf_conntrack_checksum=1 \
    || die "no conntrack sysctls in the router namespace (nf_conntrack missing?)"

# Server-side drops that make the clients retransmit (the router logs both
# copies): the first SYN to 8003, the first data segment to 8004.
ip netns exec "$ns_s" iptables -w 5 -A INPUT -p tcp --dport 8003 --syn \
    -m statistic --mode nth --every 1000000 --packet 0 -j DROP
ip netns exec "$ns_s" iptables -w 5 -A INPUT -p tcp --dport 8004 --tcp-flags PSH PSH \
    -m statistic --mode nth --every 1000000 --packet 0 -j DROP

# ------------------------------------------------------------------ servers
head -c 5000 /dev/zero | tr '\0' 'k' >"$work/file.bin"
(cd "$work" && exec timeout 90 ip netns exec "$ns_s" python3 -m http.server 8000 --bind :: \
    >"$work/http.log" 2>&1) &
netns_track_pid $!
timeout 90 ip netns exec "$ns_s" "${traffic[@]}" serve --seconds 80 >"$work/serve.log" 2>&1 &
netns_track_pid $!
netns_wait_listen "$ns_s" tcp 8000 10
for p in 8001 8002 8003 8004; do netns_wait_listen "$ns_s" tcp "$p" 10; done
netns_wait_listen "$ns_s" udp 7000 10

# ----------------------------------------------------------------- captures
cap_pids=()
start_cap() { # name iface-args...
    local name=$1; shift
    timeout -s INT 120 ip netns exec "$ns_r" tcpdump -n -U --immediate-mode -Z root -s 0 \
        -w "$out_dir/$name.pcap" "$@" >"$work/$name.log" 2>&1 &
    local pid=$! i
    netns_track_pid "$pid"
    cap_pids+=("$pid:$name")
    for ((i = 0; i < 100; i++)); do
        grep -qs 'listening on' "$work/$name.log" && return 0
        kill -0 "$pid" 2>/dev/null || die "tcpdump $name exited: $(cat "$work/$name.log")"
        sleep 0.05
    done
    die "tcpdump $name not ready after 5s: $(cat "$work/$name.log")"
}
rm -f "$out_dir"/{nflog,ingress-client,ingress-server,trace}.pcap "$out_dir/kernel-states.tsv"
start_cap nflog -i nflog:5
start_cap ingress-client -i rc -Q in
start_cap ingress-server -i rs -Q in
sleep 0.2
ip -n "$ns_c" link set c0 up
ip -n "$ns_s" link set s0 up
ip -n "$ns_c" route add default via 10.30.0.254
ip -n "$ns_c" -6 route add default via fd00:c030::fe
ip -n "$ns_s" route add default via 10.31.0.254
ip -n "$ns_s" -6 route add default via fd00:c031::fe

# ------------------------------------------------------------------ traffic
step() { # description, then the command run in the client namespace
    local what=$1; shift
    say "traffic: $what"
    timeout 15 ip netns exec "$ns_c" "$@" >"$work/step.log" 2>&1 \
        || die "traffic step failed: $what: $(cat "$work/step.log")"
}
# Resolve neighbours first so ARP/ND does not interleave with the steps.
step "warm-up ping v4" ping -q -c 1 -W 2 10.31.0.2
step "warm-up ping v6" ping -q -6 -c 1 -W 2 fd00:c031::2
step "tcp4 http (handshake, data, FIN)" curl -4 -sS --max-time 10 -o "$work/got4" http://10.31.0.2:8000/file.bin
step "tcp4 to a closed port (RST)" "${traffic[@]}" tcp-closed 10.31.0.2 9
step "tcp4 reset by the server" "${traffic[@]}" tcp-reset 10.31.0.2 8002
step "tcp4 first SYN lost (SYN retransmission)" "${traffic[@]}" tcp-echo 10.31.0.2 8003
step "tcp4 first data lost (data retransmission)" "${traffic[@]}" tcp-echo 10.31.0.2 8004
step "udp4 echo + ICMP unreachable from the client" "${traffic[@]}" udp 10.31.0.2 7000
step "udp4 to a closed port (ICMP port unreachable)" "${traffic[@]}" udp-closed 10.31.0.2 9
step "ping4" ping -q -c 2 -i 0.2 -W 2 10.31.0.2
step "ping4 fragmented" ping -q -c 2 -i 0.2 -W 2 -s 3000 10.31.0.2
step "tcp4 out-of-window ACK" "${traffic[@]}" oow-ack 10.31.0.2 8001
step "tcp4 SYN|FIN" "${traffic[@]}" syn-fin 10.31.0.2 9
step "tcp4 SYN with a bad checksum" "${traffic[@]}" bad-csum 10.31.0.2 8001
step "tcp6 http" curl -6 -g -sS --max-time 10 -o "$work/got6" "http://[fd00:c031::2]:8000/file.bin"
step "tcp6 to a closed port (RST)" "${traffic[@]}" tcp-closed fd00:c031::2 9
step "udp6 echo + ICMPv6 unreachable from the client" "${traffic[@]}" udp fd00:c031::2 7000
step "udp6 to a closed port (ICMPv6 port unreachable)" "${traffic[@]}" udp-closed fd00:c031::2 9
step "ping6" ping -q -6 -c 2 -i 0.2 -W 2 fd00:c031::2
step "ping6 fragmented" ping -q -6 -c 2 -i 0.2 -W 2 -s 3000 fd00:c031::2
step "tcp6 out-of-window ACK" "${traffic[@]}" oow-ack fd00:c031::2 8001
cmp -s "$work/got4" "$work/file.bin" || die "curl v4 fetched wrong content"
cmp -s "$work/got6" "$work/file.bin" || die "curl v6 fetched wrong content"
sleep 1.2  # > nfnetlink_log's 1 s flush timer, in case it batches

ip netns exec "$ns_r" conntrack -L >"$out_dir/conntrack-final.txt" 2>/dev/null || true
for pc in "${cap_pids[@]}"; do
    netns_stop_pid "${pc%%:*}" INT 5 || die "tcpdump ${pc#*:} did not stop on SIGINT within 5s"
    grep -Eq '(^| )0 packets dropped by kernel' "$work/${pc#*:}.log" \
        || die "tcpdump ${pc#*:} dropped packets: $(tr '\n' ' ' <"$work/${pc#*:}.log")"
done

# ------------------------------------------------------------ post-process
ifidx() { ip netns exec "$ns_r" cat "/sys/class/net/$1/ifindex"; }
python3 "$here/kernel_reference.py" "$out_dir" \
    "$out_dir/ingress-client.pcap:$(ifidx rc)" "$out_dir/ingress-server.pcap:$(ifidx rs)"

# tshark: no malformed packets, bad checksums only where the summary says so
tshark -n -r "$out_dir/trace.pcap" -o tcp.check_checksum:TRUE -o ip.check_checksum:TRUE \
    -o udp.check_checksum:TRUE -T fields -E separator=/t -e frame.number -e _ws.malformed \
    -e ip.checksum.status -e tcp.checksum.status -e udp.checksum.status \
    -e icmp.checksum.status -e icmpv6.checksum.status >"$work/tshark.tsv" 2>"$work/tshark.err" \
    || die "tshark failed: $(cat "$work/tshark.err")"
python3 - "$work/tshark.tsv" "$out_dir/kernel-states.tsv" <<'EOF' || die "tshark check failed"
import sys
# checksum status: 0 bad, 1 good, 2 unverified (Wireshark's PROTO_CHECKSUM_E_*)
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
states = [l.rstrip("\n").split("\t") for l in open(sys.argv[2])][1:]
if len(rows) != len(states):
    sys.exit(f"tshark sees {len(rows)} frames, kernel-states.tsv has {len(states)}")
bad = []
for r, s in zip(rows, states):
    r += [""] * (7 - len(r))
    malformed = r[1] != ""
    badsum = any(v == "0" or v.startswith("0,") or ",0" in v for v in r[2:])
    if malformed or badsum != ("bad-csum" in s[3]):
        bad.append(f"frame {r[0]}: malformed={malformed} bad checksum={badsum}: {s[3]}")
if bad:
    sys.exit("tshark check failed:\n  " + "\n  ".join(bad))
EOF
say "tshark: no malformed frames; bad checksums only on frames marked bad-csum"
