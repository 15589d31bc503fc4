#!/usr/bin/env bash
# Records small, real packet captures of Linux traffic between two throwaway
# network namespaces joined by a veth pair, validates them with tshark, and
# writes them plus a per-packet manifest (manifest.tsv, tshark's view of every
# packet) to the fixtures directory. Swift tests compare our parsers with it.
#
# usage: sudo Tools/record-fixtures.sh [OUTPUT_DIR]   (default: Tests/Fixtures)
#
# Topology (namespaces colofx-c-PID and colofx-s-PID, removed on exit):
#   client veth-c 52:54:00:c0:10:01  10.10.0.1/24  fd00:c010::1/64
#   server veth-s 52:54:00:c0:10:02  10.10.0.2/24  fd00:c010::2/64
#   VLAN 100: TAP devices vlan-c 52:54:00:c0:20:01 10.20.0.1/24 and
#   vlan-s 52:54:00:c0:20:02 10.20.0.2/24, bridged over the veth with an
#   802.1Q tag by a small userspace port (see capture 10 below)
# Every capture is taken with tcpdump inside the client namespace on veth-c.
# Checksum/segmentation offloads are off on both ends, so captured checksums
# are the real ones and TCP segments are at most one MSS.
#
# Idempotent: captures go to a temporary directory, are checked, and only then
# replace the files in OUTPUT_DIR (README.md there is left alone).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

prog=record-fixtures
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/netns.sh
source "$repo_root/Tools/lib/netns.sh"
# shellcheck disable=SC2034 # read by the netns.sh helpers
NETNS_PROG=$prog

out_dir=${1:-$repo_root/Tests/Fixtures}

die() { echo "$prog: error: $*" >&2; exit 1; }

netns_require_root "$prog"
netns_require_tools "$prog" ip ss tcpdump tshark ethtool ping curl python3 timeout sysctl

mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)

netns_workdir colo-fixtures "the fixtures in $out_dir were not replaced"

ns_c=$(netns_name colofx-c)
ns_s=$(netns_name colofx-s)
if_c="veth-c"
if_s="veth-s"
mac_c=52:54:00:c0:10:01
mac_s=52:54:00:c0:10:02
v4_c=10.10.0.1
v4_s=10.10.0.2
v6_c=fd00:c010::1
v6_s=fd00:c010::2
vlan_id=100
vl_c="vlan-c"
vl_s="vlan-s"
vmac_c=52:54:00:c0:20:01
vmac_s=52:54:00:c0:20:02
vl4_c=10.20.0.1
vl4_s=10.20.0.2

http4_port=8000
http6_port=8006
rst_port=8009
udp_port=7777
closed_port=9

in_c() { ip netns exec "$ns_c" "$@"; }
in_s() { ip netns exec "$ns_s" "$@"; }

# ---------------------------------------------------------------- helpers --

# Python helpers for the TCP reset and UDP scenarios (one file, subcommands).
cat >"$work/fx.py" <<'PY'
import socket, struct, sys, time

def fam(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET

def die(msg):
    sys.exit("fx.py: " + msg)

cmd, args = sys.argv[1], sys.argv[2:]

if cmd == "udp-echo":  # ADDR PORT COUNT: echo COUNT datagrams, then exit
    addr, port, count = args[0], int(args[1]), int(args[2])
    s = socket.socket(fam(addr), socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(20)
    for _ in range(count):
        data, peer = s.recvfrom(2048)
        s.sendto(b"echo " + data, peer)

elif cmd == "udp-client":  # LOCAL LPORT SERVER PORT COUNT CLOSEDPORT
    local, lport, server, port, count, closed = args[0], int(args[1]), args[2], int(args[3]), int(args[4]), int(args[5])
    s = socket.socket(fam(local), socket.SOCK_DGRAM)
    s.bind((local, lport))
    s.settimeout(3)
    for i in range(count):
        s.sendto(b"colo fixture datagram %d\n" % (i + 1), (server, port))
        try:
            s.recvfrom(2048)
        except TimeoutError:
            die("no UDP echo from %s:%d" % (server, port))
    # A connected socket reports the ICMP port unreachable as ECONNREFUSED,
    # which tells us the error arrived.
    p = socket.socket(fam(local), socket.SOCK_DGRAM)
    p.bind((local, lport + 1))
    p.connect((server, closed))
    p.settimeout(3)
    p.send(b"probe for a closed port\n")
    try:
        p.recv(2048)
        die("closed UDP port %d answered" % closed)
    except ConnectionRefusedError:
        pass
    except TimeoutError:
        die("no ICMP port unreachable from %s:%d" % (server, closed))

elif cmd == "tcp-rst-server":  # ADDR PORT: accept one, reply, then reset
    addr, port = args[0], int(args[1])
    s = socket.socket(fam(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(1)
    s.settimeout(20)
    c, _ = s.accept()
    c.settimeout(5)
    c.recv(2048)
    c.sendall(b"partial reply, then a reset\n")
    time.sleep(0.2)  # let the client acknowledge the data first
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()  # linger 0: RST instead of FIN

elif cmd == "tcp-refused":  # LOCAL LPORT SERVER PORT: expect RST to our SYN
    local, lport, server, port = args[0], int(args[1]), args[2], int(args[3])
    s = socket.socket(fam(local), socket.SOCK_STREAM)
    s.bind((local, lport))
    s.settimeout(3)
    try:
        s.connect((server, port))
        die("closed TCP port %d accepted" % port)
    except ConnectionRefusedError:
        pass

elif cmd == "tcp-reset-client":  # LOCAL LPORT SERVER PORT: send, read until reset
    local, lport, server, port = args[0], int(args[1]), args[2], int(args[3])
    s = socket.socket(fam(local), socket.SOCK_STREAM)
    s.bind((local, lport))
    s.settimeout(3)
    s.connect((server, port))
    s.sendall(b"hello, please reset me\n")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            if not s.recv(2048):
                die("server closed with FIN instead of RST")
        except ConnectionResetError:
            break
    else:
        die("no reset from %s:%d" % (server, port))

elif cmd == "vlan-port":  # TAP VETH VID SECONDS
    # An 802.1Q access port in userspace (the kernel here may lack 8021q):
    # creates TAP device TAP (IFF_TAP|IFF_NO_PI) in the current namespace;
    # every frame the kernel sends on it leaves on VETH tagged with VID, and
    # every frame tagged VID that arrives on VETH is untagged into TAP.
    import fcntl, os, select
    tap, veth, vid, secs = args[0], args[1], int(args[2]), float(args[3])
    TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x0002, 0x1000
    SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_AUXDATA = 263, 1, 8
    PACKET_MR_PROMISC, PACKET_OUTGOING, TP_STATUS_VLAN_VALID = 1, 4, 0x10
    ETH_P_ALL, TPID = 0x0003, 0x8100
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", tap.encode(), IFF_TAP | IFF_NO_PI))
    ps = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    ps.bind((veth, 0))
    ps.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    ifindex = socket.if_nametoindex(veth)
    ps.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b""))
    print("ready", flush=True)
    tag = struct.pack("!HH", TPID, vid)
    deadline = time.monotonic() + secs
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd, ps], [], [], left)
        if fd in ready:
            frame = os.read(fd, 65536)
            if len(frame) >= 14:
                ps.send(frame[:12] + tag + frame[12:])
        if ps in ready:
            data, anc, _, addr = ps.recvmsg(65536, socket.CMSG_SPACE(20))
            if addr[2] == PACKET_OUTGOING or len(data) < 14:
                continue
            tci = None
            for level, ctype, cdata in anc:
                if level == SOL_PACKET and ctype == PACKET_AUXDATA and len(cdata) >= 20:
                    status, _, _, _, _, vtci, _ = struct.unpack("IIIHHHH", cdata[:20])
                    if status & TP_STATUS_VLAN_VALID:
                        tci = vtci
            if tci is None and data[12:14] == b"\x81\x00":  # tag still in the frame
                tci = struct.unpack("!H", data[14:16])[0]
                data = data[:12] + data[16:]
            if tci is not None and tci & 0xFFF == vid:
                os.write(fd, data)

else:
    die("unknown command " + cmd)
PY

# Files served over HTTP: 3000 bytes (three data segments at MSS 1448) and a
# short one for the VLAN capture.
mkdir -p "$work/www"
for i in $(seq 1 60); do
    printf 'colo-proxy fixture line %02d abcdefghijklmnopqrstuv\n' "$i"
done >"$work/www/fixture.txt"
printf 'colo-proxy vlan fixture\n' >"$work/www/small.txt"

# Start a long-lived server in the server namespace (bounded by timeout).
start_server() { # LOGNAME CMD...
    local log=$work/$1.log
    shift
    timeout 300 ip netns exec "$ns_s" "$@" >"$log" 2>&1 &
    netns_track_pid $!
}

# No offloads: real checksums on the wire, no GSO/GRO super-packets.
no_offload() { # NS IF
    ip netns exec "$1" ethtool -K "$2" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
    if ip netns exec "$1" ethtool -k "$2" | grep -Eq '^(tx-checksumming|rx-checksumming|generic-segmentation-offload|tcp-segmentation-offload): on'; then
        die "could not turn offloads off on $2 in $1: $(ip netns exec "$1" ethtool -k "$2" | grep -E '^(tx|rx)-checksumming|segmentation-offload' | tr '\n' ' ')"
    fi
}

# Static neighbour entries so that only the ping captures (and the VLAN one)
# contain ARP / neighbour discovery.
neigh_static() {
    ip -n "$ns_c" neigh replace "$v4_s" lladdr "$mac_s" dev "$if_c" nud permanent
    ip -n "$ns_c" neigh replace "$v6_s" lladdr "$mac_s" dev "$if_c" nud permanent
    ip -n "$ns_s" neigh replace "$v4_c" lladdr "$mac_c" dev "$if_s" nud permanent
    ip -n "$ns_s" neigh replace "$v6_c" lladdr "$mac_c" dev "$if_s" nud permanent
}
neigh_clear() {
    local ns dev
    for ns in "$ns_c" "$ns_s"; do
        for dev in "$if_c" "$if_s"; do
            ip -n "$ns" link show "$dev" >/dev/null 2>&1 || continue
            ip -n "$ns" neigh flush dev "$dev" nud all >/dev/null 2>&1 || true
            ip -n "$ns" neigh flush dev "$dev" nud permanent >/dev/null 2>&1 || true
            if [ -n "$(ip -n "$ns" neigh show dev "$dev")" ]; then
                die "neighbour table of $dev in $ns not empty: $(ip -n "$ns" neigh show dev "$dev")"
            fi
        done
    done
}

cap_pid=
cap_name=
start_capture() { # NAME [IF]
    cap_name=$1
    local dev=${2:-$if_c} i
    rm -f "$work/$cap_name" "$work/$cap_name.tcpdump.log"
    ip netns exec "$ns_c" tcpdump -i "$dev" -w "$work/$cap_name" -U -s 0 -n -y EN10MB \
        --immediate-mode -Z root >"$work/$cap_name.tcpdump.log" 2>&1 &
    cap_pid=$!
    netns_track_pid "$cap_pid"
    for ((i = 0; i < 100; i++)); do
        grep -qs 'listening on' "$work/$cap_name.tcpdump.log" && break
        kill -0 "$cap_pid" 2>/dev/null || die "tcpdump for $cap_name exited: $(cat "$work/$cap_name.tcpdump.log")"
        sleep 0.05
    done
    grep -qs 'listening on' "$work/$cap_name.tcpdump.log" || die "tcpdump for $cap_name not ready after 5s"
    sleep 0.2
}
stop_capture() {
    sleep 0.5 # let the last packets arrive
    netns_stop_pid "$cap_pid" INT 5 || die "tcpdump for $cap_name did not stop on SIGINT within 5s"
    grep -Eq '(^| )0 packets dropped by kernel' "$work/$cap_name.tcpdump.log" \
        || die "tcpdump for $cap_name dropped packets: $(tr '\n' ' ' <"$work/$cap_name.tcpdump.log")"
    [ -s "$work/$cap_name" ] || die "no capture file for $cap_name"
}

ts() { tshark -n -o ip.defragment:FALSE -o ipv6.defragment:FALSE \
    -o tcp.relative_sequence_numbers:FALSE -o ip.check_checksum:TRUE \
    -o tcp.check_checksum:TRUE -o udp.check_checksum:TRUE "$@" 2>"$work/tshark.err"; }
count() { # FILE FILTER: number of packets matching FILTER (dies on tshark errors)
    ts -r "$1" -Y "$2" -T fields -e frame.number >"$work/count.out" \
        || die "tshark -r $1 -Y '$2' failed: $(grep -v 'Running as user' "$work/tshark.err")"
    wc -l <"$work/count.out"
}

# validate NAME ALLOWED EXPECT...  where EXPECT is "N:filter" (exactly N
# packets match) or "N+:filter" (at least N).
validate() {
    local name=$1 allowed=$2 f=$work/$1 e n want filter
    shift 2
    local bad='_ws.malformed or _ws.expert.severity == error or ip.checksum.status == 0
        or tcp.checksum.status == 0 or udp.checksum.status == 0
        or icmp.checksum.status == 0 or icmpv6.checksum.status == 0'
    ts -r "$f" >/dev/null || die "tshark cannot read $name: $(cat "$work/tshark.err")"
    n=$(count "$f" "$bad")
    [ "$n" -eq 0 ] || { ts -r "$f" -Y "$bad" -V >&2; die "$name: $n malformed or bad-checksum packets"; }
    n=$(count "$f" "not ($allowed)")
    [ "$n" -eq 0 ] || { ts -r "$f" -Y "not ($allowed)" >&2; die "$name: $n unexpected packets (not $allowed)"; }
    for e in "$@"; do
        want=${e%%:*}
        filter=${e#*:}
        n=$(count "$f" "$filter")
        case $want in
            *+) [ "$n" -ge "${want%+}" ] || { ts -r "$f" >&2; die "$name: want >= ${want%+} packets matching '$filter', got $n"; } ;;
            *) [ "$n" -eq "$want" ] || { ts -r "$f" >&2; die "$name: want $want packets matching '$filter', got $n"; } ;;
        esac
    done
}

# ------------------------------------------------------------------ setup --

for ns in "$ns_c" "$ns_s"; do
    netns_add "$ns"
    # Quiet IPv6: no DAD, router solicitations or RA handling, and MLD reports
    # done within milliseconds of setup, so nothing unsolicited lands in a capture.
    ip netns exec "$ns" sysctl -qw \
        net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
        net.ipv6.conf.all.router_solicitations=0 net.ipv6.conf.default.router_solicitations=0 \
        net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 \
        net.ipv6.conf.default.mldv1_unsolicited_report_interval=10 \
        net.ipv6.conf.default.mldv2_unsolicited_report_interval=10
done

ip -n "$ns_c" link add "$if_c" address "$mac_c" type veth peer name "$if_s" address "$mac_s" netns "$ns_s"
no_offload "$ns_c" "$if_c"
no_offload "$ns_s" "$if_s"

ip -n "$ns_c" addr add "$v4_c/24" dev "$if_c"
ip -n "$ns_c" addr add "$v6_c/64" dev "$if_c" nodad
ip -n "$ns_s" addr add "$v4_s/24" dev "$if_s"
ip -n "$ns_s" addr add "$v6_s/64" dev "$if_s" nodad
ip -n "$ns_c" link set "$if_c" up
ip -n "$ns_s" link set "$if_s" up
neigh_static

start_server http4 python3 -m http.server "$http4_port" --bind 0.0.0.0 --directory "$work/www"
start_server http6 python3 -m http.server "$http6_port" --bind "$v6_s" --directory "$work/www"
netns_wait_listen "$ns_s" tcp "$http4_port" 10
netns_wait_listen "$ns_s" tcp "$http6_port" 10
sleep 1 # let link-up chatter (MLD reports) finish before the first capture

curl_get() { # URL LOCALPORT EXPECTED_FILE
    in_c timeout 10 curl -sS --noproxy '*' --max-time 5 --local-port "$2" -o "$work/download" "$1" \
        || die "curl $1 failed"
    cmp -s "$work/download" "$3" || die "curl $1 returned the wrong bytes"
}

# ---------------------------------------------------------------- captures --

order=()

# 1. ping4: ARP request/reply, then 3 echo request/reply pairs.
neigh_clear
start_capture ping4.pcap
in_c timeout 10 ping -n -q -c 3 -i 0.2 -W 2 "$v4_s" >/dev/null || die "ping $v4_s failed"
stop_capture
neigh_static
validate ping4.pcap 'arp or icmp' \
    '1:arp.opcode == 1' '1:arp.opcode == 2' '3:icmp.type == 8' '3:icmp.type == 0'
order+=(ping4.pcap)

# 2. tcp4-http: curl GET of a 3000-byte file from python's http.server.
start_capture tcp4-http.pcap
curl_get "http://$v4_s:$http4_port/fixture.txt" 40080 "$work/www/fixture.txt"
stop_capture
validate tcp4-http.pcap 'ip and tcp' \
    '1:tcp.flags == 0x002' '1:tcp.flags == 0x012' '2+:tcp.flags.fin == 1' '0:tcp.flags.reset == 1' \
    '3+:tcp.srcport == 8000 and tcp.len > 0' '1+:tcp.dstport == 8000 and tcp.len > 0' \
    '2:tcp.flags.syn == 1 and tcp.options.mss_val and tcp.options.sack_perm and tcp.options.wscale.shift and tcp.options.timestamp.tsval'
order+=(tcp4-http.pcap)

# 3. tcp4-rst: SYN to a closed port (RST|ACK), then a connection the server
#    resets (SO_LINGER 0) after exchanging some data.
start_server rst4 python3 "$work/fx.py" tcp-rst-server "$v4_s" "$rst_port"
netns_wait_listen "$ns_s" tcp "$rst_port" 10
start_capture tcp4-rst.pcap
in_c timeout 10 python3 "$work/fx.py" tcp-refused "$v4_c" 40009 "$v4_s" "$closed_port"
in_c timeout 10 python3 "$work/fx.py" tcp-reset-client "$v4_c" 40010 "$v4_s" "$rst_port"
stop_capture
validate tcp4-rst.pcap 'ip and tcp' \
    '1:tcp.dstport == 9 and tcp.flags == 0x002' '1:tcp.srcport == 9 and tcp.flags == 0x014' \
    "1:tcp.srcport == $rst_port and tcp.flags.reset == 1" "1+:tcp.srcport == $rst_port and tcp.len > 0" \
    "1+:tcp.dstport == $rst_port and tcp.len > 0"
order+=(tcp4-rst.pcap)

# 4. udp4: 3 datagrams each way, then a probe answered by ICMP port unreachable.
start_server udp4 python3 "$work/fx.py" udp-echo "$v4_s" "$udp_port" 3
netns_wait_listen "$ns_s" udp "$udp_port" 10
start_capture udp4.pcap
in_c timeout 15 python3 "$work/fx.py" udp-client "$v4_c" 40777 "$v4_s" "$udp_port" 3 "$closed_port"
stop_capture
validate udp4.pcap 'ip and (udp or icmp)' \
    "3:udp.dstport == $udp_port and not icmp" "3:udp.srcport == $udp_port and not icmp" \
    '1:udp.dstport == 9 and not icmp' '1:icmp.type == 3 and icmp.code == 3 and udp.dstport == 9'
order+=(udp4.pcap)

# 5. ping6: neighbour solicitation/advertisement, then 3 echo pairs.
neigh_clear
start_capture ping6.pcap
in_c timeout 10 ping -6 -n -q -c 3 -i 0.2 -W 2 "$v6_s" >/dev/null || die "ping $v6_s failed"
stop_capture
neigh_static
validate ping6.pcap 'ipv6 and icmpv6' \
    '1+:icmpv6.type == 135' '1+:icmpv6.type == 136' '3:icmpv6.type == 128' '3:icmpv6.type == 129'
order+=(ping6.pcap)

# 6. tcp6-http: like tcp4-http over IPv6.
start_capture tcp6-http.pcap
curl_get "http://[$v6_s]:$http6_port/fixture.txt" 40086 "$work/www/fixture.txt"
stop_capture
validate tcp6-http.pcap 'ipv6 and tcp' \
    '1:tcp.flags == 0x002' '1:tcp.flags == 0x012' '2+:tcp.flags.fin == 1' '0:tcp.flags.reset == 1' \
    "3+:tcp.srcport == $http6_port and tcp.len > 0" "1+:tcp.dstport == $http6_port and tcp.len > 0" \
    '2:tcp.flags.syn == 1 and tcp.options.mss_val and tcp.options.sack_perm and tcp.options.wscale.shift and tcp.options.timestamp.tsval'
order+=(tcp6-http.pcap)

# 7. udp6: like udp4; the closed port answers with ICMPv6 port unreachable.
start_server udp6 python3 "$work/fx.py" udp-echo "$v6_s" "$udp_port" 3
netns_wait_listen "$ns_s" udp "$udp_port" 10
start_capture udp6.pcap
in_c timeout 15 python3 "$work/fx.py" udp-client "$v6_c" 40777 "$v6_s" "$udp_port" 3 "$closed_port"
stop_capture
validate udp6.pcap 'ipv6 and (udp or icmpv6)' \
    "3:udp.dstport == $udp_port and not icmpv6" "3:udp.srcport == $udp_port and not icmpv6" \
    '1:udp.dstport == 9 and not icmpv6' '1:icmpv6.type == 1 and icmpv6.code == 4 and udp.dstport == 9'
order+=(udp6.pcap)

# 8. frag4: 2 pings of 3000 bytes, 3 fragments per datagram each way.
start_capture frag4.pcap
in_c timeout 10 ping -n -q -c 2 -i 0.2 -W 2 -s 3000 "$v4_s" >/dev/null || die "ping -s 3000 $v4_s failed"
stop_capture
validate frag4.pcap 'ip and ip.proto == 1' \
    '12:ip' '8:ip.flags.mf == 1' '8:ip.frag_offset > 0' '4:ip.frag_offset == 0 and ip.flags.mf == 1'
order+=(frag4.pcap)

# 9. frag6: the same over IPv6 (fragment extension headers).
start_capture frag6.pcap
in_c timeout 10 ping -6 -n -q -c 2 -i 0.2 -W 2 -s 3000 "$v6_s" >/dev/null || die "ping -6 -s 3000 $v6_s failed"
stop_capture
validate frag6.pcap 'ipv6 and ipv6.nxt == 44 and ipv6.fraghdr.nxt == 58' \
    '12:ipv6' '8:ipv6.fraghdr.more == 1' '8:ipv6.fraghdr.offset > 0' '4:ipv6.fraghdr.offset == 0'
order+=(frag6.pcap)

# 10. vlan: ARP, 3 pings and a short curl on VLAN 100, captured on the veth
#     that carries the tagged frames. The kernels these fixtures are made on
#     may be built without 802.1Q (CONFIG_VLAN_8021Q, so no `type vlan` links)
#     and without tc's vlan action, so the tagging is done by fx.py vlan-port:
#     each namespace gets a TAP device (10.20.0.x) whose frames that helper
#     sends out on the veth with an 802.1Q tag, and whose tagged frames from
#     the veth it delivers untagged. The frames, ARP, IP and TCP are all made
#     by the kernels; only the 4-byte tag is inserted and removed in userspace.
setup_vlan() { # NS TAP VETH MAC ADDR
    local ns=$1 tap=$2 veth=$3 mac=$4 addr=$5 log=$work/vlan-$2.log i
    timeout 120 ip netns exec "$ns" python3 "$work/fx.py" vlan-port "$tap" "$veth" "$vlan_id" 100 >"$log" 2>&1 &
    netns_track_pid $!
    for ((i = 0; i < 100; i++)); do
        grep -qs ready "$log" && break
        sleep 0.05
    done
    grep -qs ready "$log" || die "VLAN port $tap in $ns not ready after 5s: $(cat "$log")"
    # IPv4 only on the VLAN: no IPv6, so no MLD or router solicitations.
    ip netns exec "$ns" sh -c "echo 1 > /proc/sys/net/ipv6/conf/$tap/disable_ipv6"
    ip -n "$ns" link set "$tap" address "$mac"
    ip -n "$ns" addr add "$addr/24" dev "$tap"
    no_offload "$ns" "$tap"
    ip -n "$ns" link set "$tap" up
}
setup_vlan "$ns_c" "$vl_c" "$if_c" "$vmac_c" "$vl4_c"
setup_vlan "$ns_s" "$vl_s" "$if_s" "$vmac_s" "$vl4_s"
sleep 0.5
start_capture vlan.pcap "$if_c"
in_c timeout 10 ping -n -q -c 3 -i 0.2 -W 2 "$vl4_s" >/dev/null || die "ping $vl4_s failed"
curl_get "http://$vl4_s:$http4_port/small.txt" 40100 "$work/www/small.txt"
stop_capture
validate vlan.pcap "vlan.id == $vlan_id and (arp or ip)" \
    '2+:arp' '3:icmp.type == 8' '3:icmp.type == 0' '1:tcp.flags == 0x002' '1:tcp.flags == 0x012' \
    '2+:tcp.flags.fin == 1' '0:tcp.flags.reset == 1'
order+=(vlan.pcap)

# --------------------------------------------------------------- manifest --

fields=(
    frame.number eth.type vlan.id
    ip.src ip.dst ip.proto ip.flags.mf ip.frag_offset ip.id
    ipv6.src ipv6.dst ipv6.nxt ipv6.fraghdr.offset ipv6.fraghdr.more
    tcp.srcport tcp.dstport tcp.seq_raw tcp.ack_raw tcp.flags tcp.len
    tcp.options.mss_val tcp.options.wscale.shift tcp.options.timestamp.tsval
    udp.srcport udp.dstport udp.length
    icmp.type icmp.code icmp.ident icmpv6.type icmpv6.code arp.opcode
    # extra columns, after the ones above
    frame.len vlan.etype ipv6.fraghdr.nxt ipv6.fraghdr.ident
    tcp.window_size_value tcp.options.timestamp.tsecr
)
# Every field must exist in this tshark (field names change between versions).
tshark -G fields 2>/dev/null | awk -F'\t' '$1 == "F" { print $3 }' >"$work/tshark-fields"
for f in "${fields[@]}"; do
    grep -qxF "$f" "$work/tshark-fields" \
        || die "tshark $(tshark --version 2>/dev/null | head -1) has no field $f"
done
field_args=()
for f in "${fields[@]}"; do field_args+=(-e "$f"); done

{
    printf 'file\tindex'; printf '\t%s' "${fields[@]}"; printf '\n'
    for name in "${order[@]}"; do
        ts -r "$work/$name" -T fields -E separator=/t -E occurrence=a -E aggregator=, -E quote=n \
            "${field_args[@]}" | awk -v f="$name" 'BEGIN { OFS = "\t" } { print f, NR, $0 }'
    done
} >"$work/manifest.tsv"

# ----------------------------------------------------------------- install --

total=0
for name in "${order[@]}"; do
    bytes=$(stat -c %s "$work/$name")
    [ "$bytes" -le 61440 ] || die "$name is $bytes bytes (limit 60 KiB)"
    total=$((total + bytes))
done
bytes=$(stat -c %s "$work/manifest.tsv")
total=$((total + bytes))
[ "$total" -le 307200 ] || die "fixtures total $total bytes (limit 300 KiB)"

for name in "${order[@]}" manifest.tsv; do
    install -m 0644 "$work/$name" "$out_dir/$name"
done
for name in "${order[@]}"; do
    printf '%-15s %3d packets %6d bytes\n' "$name" \
        "$(count "$out_dir/$name" frame)" "$(stat -c %s "$out_dir/$name")"
done
printf '%-15s %3d packets %6d bytes\n' manifest.tsv "$(($(wc -l <"$out_dir/manifest.tsv") - 1))" "$bytes"
echo "$prog: wrote ${#order[@]} captures and manifest.tsv to $out_dir ($total bytes)"
