#!/usr/bin/env bash
# Benchmark (issue 5): `colo-proxy loadgen` against QEMU's standalone colo-compare and against `colo-proxy run`
# (release build) with the same three chardev sockets; prints released frame pairs per second and the ratio.
# A third endpoint, the direct path (Tools/direct-forward.c: primary_in copied to outdev, no comparison), measures
# the ceiling of the load generator and loopback TCP in the same run.
#
#   Tools/bench-qemu.sh            # both workloads: 64 x 100-byte and 1 x 1400-byte connections
#   SKIP_BUILD=1 PACKETS_SMALL=10000 PACKETS_LARGE=100000 ROUNDS=1 BATCH=64 Tools/bench-qemu.sh   # reuse the build
#   TRANSPORT=unix Tools/bench-qemu.sh   # the three chardevs as Unix stream sockets instead of loopback TCP
# Each workload runs ROUNDS times (default 5), each round QEMU, colo-proxy and the direct path in turn on fresh
# processes; the summary gives each endpoint's median and the ratio of the medians, with the range of the rounds'
# own ratios. On a shared machine one round's ratio can be off by a third either way (a neighbour taking the CPU
# during colo-proxy's half second, or during part of QEMU's eight), so the median is the figure to quote.
# The default sizes (64 x 30000 x 100 B = 1.92 M frames a side, 1 x 300000 x 1400 B) keep the fastest endpoint busy
# for half a second or more, so that its first tens of milliseconds (threads starting, TCP windows opening, the
# first touch of its memory) do not decide the figure; shorter runs measure start-up as much as throughput.
# Needs qemu-system-x86_64 (Tools/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH

command -v qemu-system-x86_64 >/dev/null || { echo "bench-qemu: qemu-system-x86_64 missing (Tools/install-deps.sh)" >&2; exit 1; }
[ -n "${SKIP_BUILD:-}" ] || swift build -c release --product colo-proxy >&2
bin=.build/release/colo-proxy
[ -x "$bin" ] || { echo "bench-qemu: $bin missing" >&2; exit 1; }
work=$(mktemp -d /tmp/bench-qemu.XXXXXX)
compiler=$(command -v cc || command -v clang || true)
[ -n "$compiler" ] || { echo "bench-qemu: no C compiler (cc or clang) for Tools/direct-forward.c" >&2; exit 1; }
"$compiler" -O2 -o "$work/direct-forward" Tools/direct-forward.c

# Below the ephemeral range (32768-60999): a fixed port there can be some client connection's local port.
base=${BASE_PORT:-27100}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; pids=(); }
trap 'cleanup; rm -rf "$work"' EXIT

# The chardev transport: loopback TCP (QEMU's documented COLO setup) or Unix stream sockets.
transport=${TRANSPORT:-tcp}
case "$transport" in tcp | unix) ;; *) echo "bench-qemu: TRANSPORT must be tcp or unix, not '$transport'" >&2; exit 2 ;; esac
sides=(primary secondary outdev)
endpoint=0
# One endpoint's three addresses: ports base..base+2, or the sockets primary, secondary and outdev in a directory.
# (Called in the command substitution of each measurement, so every endpoint gets the same ones, freed in between.)
next_endpoint() {
    endpoint=$((endpoint + 1))
    if [ "$transport" = tcp ]; then
        chardev=() loadgen=()
        for i in 0 1 2; do
            chardev+=("host=127.0.0.1,port=$((base + i))") loadgen+=("127.0.0.1:$((base + i))")
        done
        direct=("$base")
        base=$((base + 3))
    else
        local dir="$work/e$endpoint"
        mkdir -p "$dir"
        rm -f "$dir/primary" "$dir/secondary" "$dir/outdev"
        chardev=() loadgen=()
        for side in "${sides[@]}"; do chardev+=("path=$dir/$side") loadgen+=("$dir/$side"); done
        direct=(--unix "$dir")
    fi
}

# Listening, checked without connecting (a probe connection would count as a chardev client).
wait_listening() { # LOADGEN-ADDRESS
    local filter
    if [ "$transport" = tcp ]; then filter=(-t "sport = :${1##*:}"); else filter=(-x "src = $1"); fi
    for _ in $(seq 200); do ss -Hl "${filter[@]}" | grep -q . && return 0; sleep 0.05; done
    return 1
}

start_qemu() {
    qemu-system-x86_64 -machine none -nodefaults -display none -monitor none -serial none \
        -object iothread,id=io1 \
        -chardev socket,id=pri,"${chardev[0]}",server=on,wait=off \
        -chardev socket,id=sec,"${chardev[1]}",server=on,wait=off \
        -chardev socket,id=out,"${chardev[2]}",server=on,wait=off \
        -object colo-compare,id=c0,primary_in=pri,secondary_in=sec,outdev=out,iothread=io1 &
    pids+=($!)
}

start_proxy() {
    "$bin" run --no-control \
        --port socket,id=pin,"${chardev[0]}",server=on \
        --port socket,id=sin,"${chardev[1]}",server=on \
        --port socket,id=out,"${chardev[2]}",server=on \
        --object colo-compare,id=cmp,primary_in=pin,secondary_in=sin,outdev=out >/dev/null 2>&1 &
    pids+=($!)
}

start_direct() {
    "$work/direct-forward" "${direct[@]}" &
    pids+=($!)
}

# One measurement on a fresh endpoint (QEMU 7.2 loses the first frame after its chardev clients reconnect).
measure() { # qemu|proxy|direct CONNECTIONS PACKETS PAYLOAD
    next_endpoint
    "start_$1"
    wait_listening "${loadgen[2]}" || { echo "bench-qemu: $1 did not listen on ${loadgen[2]}" >&2; cleanup; return 1; }
    sleep 0.2 # the sockets after the outdev
    "$bin" loadgen --primary "${loadgen[0]}" --secondary "${loadgen[1]}" --outdev "${loadgen[2]}" \
        --connections "$2" --packets "$3" --payload-size "$4" --batch "$batch" --json | tail -1 || true
    cleanup
}

pps() { sed -E 's/.*"pairs_per_second":([0-9.]+).*/\1/'; }
released() { sed -E 's/.*"released":([0-9]+).*/\1/'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
rounds=${ROUNDS:-5}
# Frames per side per write of the load generator. Its writes run loopback TCP's send and receive paths on the same
# two cores as the endpoint: with 64-frame writes (11 KB at 100 B) the harness took enough CPU to cost colo-proxy
# about a sixth of its figure, while QEMU's stayed the same. 256 frames is 4 per connection per side at 64
# connections, still lock-step.
batch=${BATCH:-256}
case "$batch" in '' | *[!0-9]*) echo "bench-qemu: BATCH must be a non-negative integer, not '$batch'" >&2; exit 2 ;; esac
case "$rounds" in '' | *[!0-9]* | 0) echo "bench-qemu: ROUNDS must be a positive integer, not '$rounds'" >&2; exit 2 ;; esac

for workload in "64 ${PACKETS_SMALL:-30000} 100" "1 ${PACKETS_LARGE:-300000} 1400"; do
    set -- $workload
    echo "workload: $1 connections x $2 packets x $3-byte payload, $rounds rounds, load generator batches of $batch," \
        "$transport sockets"
    qs=() cs=() ds=() rs=()
    for round in $(seq "$rounds"); do
        q=$(measure qemu "$@")
        c=$(measure proxy "$@")
        d=$(measure direct "$@")
        qp=$(echo "$q" | pps) cp=$(echo "$c" | pps) dp=$(echo "$d" | pps)
        qs+=("$qp") cs+=("$cp") ds+=("$dp") rs+=("$(ratio "$cp" "$qp")")
        echo " round $round"
        echo "  qemu colo-compare: $(echo "$q" | released) released, $qp pairs/s    $q"
        echo "  colo-proxy:        $(echo "$c" | released) released, $cp pairs/s    $c"
        echo "  direct path:       $(echo "$d" | released) released, $dp pairs/s    $d"
        echo "  ratio colo-proxy/qemu: $(ratio "$cp" "$qp")   direct/qemu: $(ratio "$dp" "$qp")   colo-proxy/direct: $(ratio "$cp" "$dp")"
    done
    qm=$(printf '%s\n' "${qs[@]}" | median) cm=$(printf '%s\n' "${cs[@]}" | median) dm=$(printf '%s\n' "${ds[@]}" | median)
    echo " medians: qemu $qm, colo-proxy $cm, direct $dm pairs/s"
    echo " ratio of medians colo-proxy/qemu: $(ratio "$cm" "$qm")   direct/qemu: $(ratio "$dm" "$qm")   colo-proxy/direct: $(ratio "$cm" "$dm")"
    echo " rounds' ratios colo-proxy/qemu: ${rs[*]} (median $(printf '%s\n' "${rs[@]}" | median))"
done
