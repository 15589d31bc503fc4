#!/usr/bin/env bash
# Records small real-traffic sample captures for `colo-proxy replay`: two
# independent "lab copies" built from real Linux stacks, run side by side,
# each a client namespace joined to one replica namespace by its own veth pair:
#
#   copy A:  client-A  eth-c 52:54:00:00:00:01 10.10.0.1 fd00:c010::1
#                <-> primary   eth-r 52:54:00:00:00:02 10.10.0.2 fd00:c010::2
#   copy B:  client-B  (same MAC / addresses)
#                <-> secondary (same MAC / addresses)
#
# The copies never see each other. Both replicas run the same servers
# (python3 -m http.server --protocol HTTP/1.1 on 8000, a UDP echo on 7777);
# the same client actions start in both copies at the same wall-clock instant
# (a barrier: Tools/lab/samples_lab.py `at`), with fixed client ports and a
# fixed ICMP echo identifier, so every flow has the same tuple in both copies.
# Captures (tcpdump -Q out, Ethernet, -s 0), per set:
#   primary.pcap    what the primary sends   (on its eth-r)
#   secondary.pcap  what the secondary sends (on its eth-r)
#   client.pcap     what client-A sends      (on its eth-c)
# Sets: identical/ (both replicas serve the same bytes) and diverge/ (the
# secondary's a.txt differs in one byte at body offset 5000; see EXPECTED.md).
# Offloads are off, neighbours static (no ARP/ND), IPv6 DAD/RS/MLD quiet.
#
# usage: sudo Tools/record-samples.sh [OUTDIR]   (default: Configs/samples)
#
# Idempotent: everything is recorded and verified (tshark: no malformed
# packets, checksums good; python: ISNs differ, byte streams equal / one byte
# different at the expected stream_offset) in a temporary directory, and only
# then replaces OUTDIR/{identical,diverge}/ and OUTDIR/README.md.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

prog=record-samples
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/netns.sh
source "$repo_root/Tools/lib/netns.sh"
# shellcheck disable=SC2034 # read by the netns.sh helpers
NETNS_PROG=$prog
helper=$repo_root/Tools/lab/samples_lab.py

out_dir=${1:-$repo_root/Configs/samples}

die() { echo "$prog: error: $*" >&2; exit 1; }
say() { echo "$prog: $*"; }

netns_require_root "$prog"
netns_require_tools "$prog" ip ss tcpdump tshark ethtool ping curl python3 timeout sysctl cmp
[ -r "$helper" ] || die "missing $helper"
# The interpreter itself, not a version-manager shim: startup time matters for
# the barrier below.
py=$(python3 -c 'import sys; print(sys.executable)') || die "python3 does not run"

mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)

netns_workdir colo-samples "the samples in $out_dir were not replaced"

started=$SECONDS
budget=45 # seconds: no new attempt after this, so the whole run stays under a minute
check_budget() {
    [ $((SECONDS - started)) -lt "$budget" ] || die "time budget of ${budget}s exhausted"
}

ns_ca=$(netns_name colos-ca)
ns_p=$(netns_name colos-p)
ns_cb=$(netns_name colos-cb)
ns_s=$(netns_name colos-s)
if_c=eth-c
if_r=eth-r
mac_c=52:54:00:00:00:01
mac_r=52:54:00:00:00:02
v4_c=10.10.0.1
v4_r=10.10.0.2
v6_c=fd00:c010::1
v6_r=fd00:c010::2
http_port=8000
http_cport=40080
udp_port=7777
udp_cport=40053
ping_id=16962 # 0x4242
ping_pattern=636f6c6f # "colo"
body_offset=5000

# ------------------------------------------------------------------ setup --

# No offloads: real checksums on the wire, no GSO/GRO super-packets.
no_offload() { # NS IF
    ip netns exec "$1" ethtool -K "$2" tx off rx off tso off gso off gro off >/dev/null 2>&1 || true
    if ip netns exec "$1" ethtool -k "$2" | grep -Eq '^(tx-checksumming|rx-checksumming|generic-segmentation-offload|tcp-segmentation-offload|generic-receive-offload): on'; then
        die "could not turn offloads off on $2 in $1"
    fi
}

# build_copy CLIENT_NS REPLICA_NS: one lab copy (client <-> replica).
build_copy() {
    local cns=$1 rns=$2 ns
    for ns in "$cns" "$rns"; do
        netns_add "$ns"
        # Quiet IPv6 (no DAD, RS, RA; MLD reports done within milliseconds) and
        # ping over raw sockets so that `ping -e` fixes the echo identifier.
        ip netns exec "$ns" sysctl -qw \
            net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
            net.ipv6.conf.all.router_solicitations=0 net.ipv6.conf.default.router_solicitations=0 \
            net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 \
            net.ipv6.conf.default.mldv1_unsolicited_report_interval=10 \
            net.ipv6.conf.default.mldv2_unsolicited_report_interval=10 \
            "net.ipv4.ping_group_range=1 0"
    done
    ip -n "$cns" link add "$if_c" address "$mac_c" type veth peer name "$if_r" address "$mac_r" netns "$rns"
    no_offload "$cns" "$if_c"
    no_offload "$rns" "$if_r"
    ip -n "$cns" addr add "$v4_c/24" dev "$if_c"
    ip -n "$cns" addr add "$v6_c/64" dev "$if_c" nodad
    ip -n "$rns" addr add "$v4_r/24" dev "$if_r"
    ip -n "$rns" addr add "$v6_r/64" dev "$if_r" nodad
    ip -n "$cns" link set "$if_c" up
    ip -n "$rns" link set "$if_r" up
    ip -n "$cns" neigh replace "$v4_r" lladdr "$mac_r" dev "$if_c" nud permanent
    ip -n "$cns" neigh replace "$v6_r" lladdr "$mac_r" dev "$if_c" nud permanent
    ip -n "$rns" neigh replace "$v4_c" lladdr "$mac_c" dev "$if_r" nud permanent
    ip -n "$rns" neigh replace "$v6_c" lladdr "$mac_c" dev "$if_r" nud permanent
}

# start_servers REPLICA_NS WWW_DIR LOGNAME
start_servers() {
    local rns=$1 www=$2 log=$work/$3
    timeout 120 ip netns exec "$rns" "$py" -m http.server "$http_port" --bind "$v4_r" \
        --protocol HTTP/1.1 --directory "$www" >"$log-http.log" 2>&1 &
    netns_track_pid $!
    timeout 120 ip netns exec "$rns" "$py" "$helper" udp-echo "$v4_r" "$udp_port" 110 \
        >"$log-udp.log" 2>&1 &
    netns_track_pid $!
}

# build_lab: both copies and their servers, fresh (a new run's client port
# 40080 must not meet the previous run's TIME_WAIT).
build_lab() {
    local ns
    netns_cleanup
    build_copy "$ns_ca" "$ns_p"
    build_copy "$ns_cb" "$ns_s"
    start_servers "$ns_p" "$work/www-p" primary
    start_servers "$ns_s" "$work/www-s" secondary
    for ns in "$ns_p" "$ns_s"; do
        netns_wait_listen "$ns" tcp "$http_port" 10
        netns_wait_listen "$ns" udp "$udp_port" 10
    done
    sleep 1 # let link-up chatter (MLD reports) finish before the first capture
}

# --------------------------------------------------------------- captures --

cap_pids=()
cap_names=()
start_capture() { # NS IF FILE
    local ns=$1 dev=$2 file=$3 i pid
    rm -f "$file" "$file.log"
    ip netns exec "$ns" tcpdump -i "$dev" -Q out -w "$file" -U -s 0 -n -y EN10MB \
        --immediate-mode -Z root >"$file.log" 2>&1 &
    pid=$!
    netns_track_pid "$pid"
    cap_pids+=("$pid")
    cap_names+=("$file")
    for ((i = 0; i < 100; i++)); do
        grep -qs 'listening on' "$file.log" && return 0
        kill -0 "$pid" 2>/dev/null || die "tcpdump for $file exited: $(cat "$file.log")"
        sleep 0.05
    done
    die "tcpdump for $file not ready after 5s"
}
stop_captures() {
    local i
    sleep 0.5 # let the last packets (final ACKs) go out
    for i in "${!cap_pids[@]}"; do
        netns_stop_pid "${cap_pids[$i]}" INT 5 || die "tcpdump for ${cap_names[$i]} did not stop on SIGINT within 5s"
        grep -Eq '(^| )0 packets dropped by kernel' "${cap_names[$i]}.log" \
            || die "tcpdump for ${cap_names[$i]} dropped packets: $(tr '\n' ' ' <"${cap_names[$i]}.log")"
        [ -s "${cap_names[$i]}" ] || die "no capture file ${cap_names[$i]}"
        rm -f "${cap_names[$i]}.log"
    done
    cap_pids=()
    cap_names=()
}

# client_actions CLIENT_NS T0 TAG: the same actions, started at fixed
# wall-clock instants, in one copy (pids collected in action_pids).
action_pids=()
action_names=()
run_at() { # NS WHEN NAME CMD...
    local ns=$1 when=$2 name=$3
    shift 3
    timeout 10 ip netns exec "$ns" "$py" "$helper" at "$when" "$@" >"$work/$name.log" 2>&1 &
    action_pids+=("$!")
    action_names+=("$name")
}
client_actions() {
    local ns=$1 t0=$2 tag=$3
    local base="http://$v4_r:$http_port"
    # HTTP: two GETs on one keep-alive connection from a fixed port
    run_at "$ns" "$t0" "$tag-http" curl -sS --noproxy '*' --max-time 5 --local-port "$http_cport" \
        -o "$work/$tag-a.txt" -o "$work/$tag-b.txt" "$base/a.txt" "$base/b.txt"
    # UDP: three request/response exchanges from a fixed port
    run_at "$ns" "$(plus "$t0" 0.5)" "$tag-udp" \
        "$py" "$helper" udp-client "$v4_c" "$udp_cport" "$v4_r" "$udp_port" 3
    # ICMP / ICMPv6 echo, fixed identifier, 12 data bytes (no timestamp: the
    # payload is the pattern only, so both copies send the same bytes)
    run_at "$ns" "$(plus "$t0" 0.8)" "$tag-ping4" \
        ping -n -q -c 2 -i 0.2 -W 2 -e "$ping_id" -s 12 -p "$ping_pattern" "$v4_r"
    run_at "$ns" "$(plus "$t0" 1.3)" "$tag-ping6" \
        ping -6 -n -q -c 2 -i 0.2 -W 2 -e "$ping_id" -s 12 -p "$ping_pattern" "$v6_r"
}
plus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", a + b }'; }

wait_actions() {
    local i rc=0
    for i in "${!action_pids[@]}"; do
        if ! wait "${action_pids[$i]}"; then
            echo "$prog: client action ${action_names[$i]} failed: $(tr '\n' ' ' <"$work/${action_names[$i]}.log")" >&2
            rc=1
        fi
    done
    action_pids=()
    action_names=()
    return $rc
}

ts() { tshark -n -o ip.defragment:FALSE -o ipv6.defragment:FALSE \
    -o tcp.relative_sequence_numbers:FALSE -o ip.check_checksum:TRUE \
    -o tcp.check_checksum:TRUE -o udp.check_checksum:TRUE "$@" 2>"$work/tshark.err"; }
count() { # FILE FILTER
    ts -r "$1" -Y "$2" -T fields -e frame.number >"$work/count.out" \
        || die "tshark -r $1 -Y '$2' failed: $(grep -v 'Running as user' "$work/tshark.err")"
    wc -l <"$work/count.out"
}

# tshark_check FILE ALLOWED: readable, no malformed / bad-checksum packets,
# every packet matches ALLOWED.
tshark_check() {
    local f=$1 allowed=$2 n
    local bad='_ws.malformed or _ws.expert.severity == error or ip.checksum.status == 0
        or tcp.checksum.status == 0 or udp.checksum.status == 0
        or icmp.checksum.status == 0 or icmpv6.checksum.status == 0'
    ts -r "$f" >/dev/null || { echo "tshark cannot read $f: $(cat "$work/tshark.err")" >&2; return 1; }
    n=$(count "$f" "$bad")
    [ "$n" -eq 0 ] || { ts -r "$f" -Y "$bad" >&2; echo "$f: $n malformed or bad-checksum packets" >&2; return 1; }
    n=$(count "$f" "not ($allowed)")
    [ "$n" -eq 0 ] || { ts -r "$f" -Y "not ($allowed)" >&2; echo "$f: $n unexpected packets" >&2; return 1; }
    n=$(count "$f" "ip.checksum.status == 1 or ipv6")
    [ "$n" -eq "$(count "$f" "frame")" ] || { echo "$f: not every IPv4 checksum verified good" >&2; return 1; }
    return 0
}

# tshark_stream FILE OUT: payload bytes of TCP stream 0 (the HTTP flow), as
# tshark reassembles them (follow,tcp,raw).
tshark_stream() {
    ts -r "$1" -q -z follow,tcp,raw,0 | "$py" -c '
import sys
hexdata = "".join(l.strip() for l in sys.stdin
                  if l.strip() and not l.startswith(("=", "Follow:", "Filter:", "Node ")))
sys.stdout.buffer.write(bytes.fromhex(hexdata))' >"$2"
}

# record_set NAME: record and verify one set into $work/out/NAME.
record_set() {
    local name=$1 dir=$work/out/$1 t0 f n isn_p isn_s diff
    rm -rf "$dir"
    mkdir -p "$dir"
    build_lab
    start_capture "$ns_p" "$if_r" "$dir/primary.pcap"
    start_capture "$ns_s" "$if_r" "$dir/secondary.pcap"
    start_capture "$ns_ca" "$if_c" "$dir/client.pcap"
    sleep 0.2
    # Start a little after a whole second, so that the HTTP Date header (second
    # resolution) is the same in both replicas; at least 0.8 s ahead so that
    # every process reaches the barrier in time (`at` fails when it is late).
    t0=$("$py" -c 'import math, time; print("%.3f" % (math.ceil(time.time() + 0.8) + 0.05))')
    client_actions "$ns_ca" "$t0" A
    client_actions "$ns_cb" "$t0" B
    wait_actions || { stop_captures; return 1; }
    stop_captures
    for f in a b; do
        cmp -s "$work/A-$f.txt" "$work/www-p/$f.txt" || { echo "client-A did not receive the primary's $f.txt" >&2; return 1; }
        cmp -s "$work/B-$f.txt" "$work/www-s/$f.txt" || { echo "client-B did not receive the secondary's $f.txt" >&2; return 1; }
    done

    say "$name: tshark checks (malformed, checksums, only the expected packets)"
    for f in primary secondary; do
        tshark_check "$dir/$f.pcap" "eth.src == $mac_r and eth.dst == $mac_c and
            ((ip.src == $v4_r and (tcp.srcport == $http_port or udp.srcport == $udp_port or icmp.type == 0))
             or (ipv6.src == $v6_r and icmpv6.type == 129))" || return 1
    done
    tshark_check "$dir/client.pcap" "eth.src == $mac_c and eth.dst == $mac_r and
        ((ip.src == $v4_c and (tcp.dstport == $http_port or udp.dstport == $udp_port or icmp.type == 8))
         or (ipv6.src == $v6_c and icmpv6.type == 128))" || return 1
    for f in primary secondary; do
        n=$(ts -r "$dir/$f.pcap" -T fields -e tcp.stream | sort -u | grep -c .)
        [ "$n" -eq 1 ] || { echo "$f.pcap: want 1 TCP stream (keep-alive), got $n" >&2; return 1; }
    done
    isn_p=$(ts -r "$dir/primary.pcap" -Y 'tcp.flags.syn == 1' -T fields -e tcp.seq_raw)
    isn_s=$(ts -r "$dir/secondary.pcap" -Y 'tcp.flags.syn == 1' -T fields -e tcp.seq_raw)
    say "$name: tshark: SYN|ACK ISN primary $isn_p, secondary $isn_s"
    if [ -z "$isn_p" ] || [ -z "$isn_s" ] || [ "$isn_p" = "$isn_s" ]; then
        echo "ISNs missing or equal: '$isn_p' '$isn_s'" >&2
        return 1
    fi
    tshark_stream "$dir/primary.pcap" "$work/stream-p"
    tshark_stream "$dir/secondary.pcap" "$work/stream-s"
    diff=$(cmp -l "$work/stream-p" "$work/stream-s" 2>&1 || true)
    say "$name: tshark follow,tcp,raw: primary $(wc -c <"$work/stream-p") bytes, secondary $(wc -c <"$work/stream-s") bytes, differing bytes (1-based position, octal): ${diff:-none}"

    say "$name: stream comparison (python reassembly)"
    "$py" "$helper" check "$dir" --mode "$name" --body-offset "$body_offset" --http-port "$http_port" \
        --summary "$work/summary-$name.md" --expected "$dir/EXPECTED.md" || return 1
    if [ "$name" = identical ]; then
        [ -z "$diff" ] || { echo "tshark: streams differ" >&2; return 1; }
    else
        [ "$(printf '%s\n' "$diff" | grep -c .)" -eq 1 ] || { echo "tshark: want one differing byte" >&2; return 1; }
        n=$(awk '/^stream_offset:/ {print $2}' "$dir/EXPECTED.md")
        [ "$(printf '%s\n' "$diff" | awk '{print $1}')" -eq $((n + 1)) ] \
            || { echo "tshark: differing byte not at stream_offset $n" >&2; return 1; }
    fi
    for f in "$dir"/*.pcap; do
        [ "$(stat -c %s "$f")" -lt 100000 ] || { echo "$f is not under 100 KB" >&2; return 1; }
    done
}

record_with_retries() { # NAME
    local attempt
    for attempt in 1 2 3; do
        check_budget
        say "recording $1 (attempt $attempt)"
        if record_set "$1"; then
            return 0
        fi
        echo "$prog: $1: attempt $attempt did not verify" >&2
    done
    die "$1: no verified recording after 3 attempts"
}

"$py" "$helper" files "$work/www-p"
"$py" "$helper" files "$work/www-s"
record_with_retries identical
"$py" "$helper" files "$work/www-s" --flip "$body_offset"
[ "$(cmp -l "$work/www-p/a.txt" "$work/www-s/a.txt" | awk '{print $1}' || true)" = $((body_offset + 1)) ] \
    || die "secondary's a.txt does not differ at body offset $body_offset"
record_with_retries diverge

# ------------------------------------------------------------------ output --

cat >"$work/out/README.md" <<EOF
# Sample captures for \`colo-proxy replay\`

Made by \`Tools/record-samples.sh\` (root; about 20 s): real Linux TCP/UDP/ICMP stacks
in network namespaces as the replicas. Re-running it replaces these files.

## How they were made

Two independent lab copies run side by side, each a client namespace and a replica
namespace joined by its own veth pair (the copies never see each other):

| copy | client | replica |
|---|---|---|
| A | client-A \`$mac_c\` $v4_c $v6_c | **primary** \`$mac_r\` $v4_r $v6_r |
| B | client-B (same MAC and addresses) | **secondary** (same MAC and addresses) |

Offloads are off (\`ethtool -K tx off rx off tso off gso off gro off\`), so checksums are
real and TCP segments are at most one MSS (1448 bytes with timestamps). Neighbour
entries are static: no ARP or neighbour discovery in the captures. Both replicas run
\`python3 -m http.server $http_port --protocol HTTP/1.1\` (keep-alive) and a small UDP echo
server on port $udp_port (\`Tools/lab/samples_lab.py udp-echo\`: answers \`"echo " + data\`).
The same client actions start in both copies at the same wall-clock instant
(\`samples_lab.py at\`), a few ms after a whole second so the HTTP \`Date\` header is the
same in both replicas (the files have the same fixed mtime, so \`Last-Modified\` is too):

1. \`curl --local-port $http_cport http://$v4_r:$http_port/a.txt http://$v4_r:$http_port/b.txt\`:
   two GETs on one keep-alive connection (a.txt 20000 bytes, b.txt 1500 bytes), then
   curl closes (FIN from the client, FIN from the server).
2. UDP from $v4_c:$udp_cport to $v4_r:$udp_port: three datagrams, each answered.
3. \`ping -c 2 -e $ping_id -s 12 -p $ping_pattern $v4_r\` (raw socket, fixed identifier;
   12 data bytes so ping puts no timestamp in the payload: the echo data are equal in
   both copies).
4. The same with \`ping -6\` to $v6_r (ICMPv6).

Captures (tcpdump \`-Q out\`, Ethernet, \`-s 0\`):
\`primary.pcap\` = everything the primary sends, \`secondary.pcap\` = everything the
secondary sends, \`client.pcap\` = everything client-A sends (its handshake ACK carries
primary ISN + 1, from which replay learns the offset). Client-B has its own ISN and TCP
timestamps, so the secondary's ack numbers and timestamp echoes differ from the
primary's; headers are not compared (SPEC §3), and the ISNs differ only a little because
both kernels derive them from the same secret and tuple plus the clock (SPEC §4).

Verified after recording: tshark finds no malformed packets and every IPv4, TCP, UDP,
ICMP and ICMPv6 checksum good; the SYN|ACK ISNs differ between the replicas; the
replica → client byte streams (reassembled by sequence number, and again with
\`tshark -z follow,tcp,raw\`) are equal in \`identical/\` and differ in exactly one byte at
the expected \`stream_offset\` in \`diverge/\`; UDP and ICMP datagrams are equal whole.

## identical/

Both replicas serve the same files.

$(cat "$work/summary-identical.md")

## diverge/

The secondary's \`a.txt\` differs from the primary's in exactly one byte, body offset
$body_offset (0-based); everything else is as in \`identical/\`.

$(cat "$work/summary-diverge.md")
EOF

# Replace the output only now that everything verified.
for set in identical diverge; do
    rm -rf "${out_dir:?}/$set.new"
    mkdir -p "$out_dir/$set.new"
    cp "$work/out/$set"/*.pcap "$out_dir/$set.new/"
    [ "$set" = diverge ] && cp "$work/out/$set/EXPECTED.md" "$out_dir/$set.new/"
    rm -rf "${out_dir:?}/$set"
    mv "$out_dir/$set.new" "$out_dir/$set"
done
cp "$work/out/README.md" "$out_dir/README.md"
chmod a+r "$out_dir"/README.md "$out_dir"/*/*

say "wrote $out_dir in $((SECONDS - started))s:"
for f in "$out_dir"/*/*.pcap; do
    printf '  %-40s %6d bytes %4d packets\n' "${f#"$out_dir"/}" "$(stat -c %s "$f")" "$(count "$f" frame)"
done
say "expected diverge stream_offset: $(awk '/^stream_offset:/ {print $2}' "$out_dir/diverge/EXPECTED.md")"
