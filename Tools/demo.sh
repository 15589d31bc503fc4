#!/usr/bin/env bash
# The README's first command: sets everything up and runs the main job.
#
# The COLO demo lab (`colo-proxy demo`) is not built yet. Until it is, the main job runs on bundled captures
# of real traffic: `colo-proxy replay` compares two replica pairs recorded from real Linux stacks
# (Configs/samples: one identical, one whose secondary served one different byte), and `colo-proxy conntrack`
# shows every packet's ct_state for the fixtures recorded by Tools/record-fixtures.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi

Tools/install-deps.sh
echo "demo: building colo-proxy (release)"
swift build -c release --product colo-proxy 2>&1 | tail -n 1
bin=$(swift build -c release --show-bin-path)/colo-proxy

for pair in identical diverge; do
    dir=Configs/samples/$pair
    echo
    echo "== colo-proxy replay --primary $dir/primary.pcap --secondary $dir/secondary.pcap --client $dir/client.pcap"
    status=0
    "$bin" replay --primary "$dir/primary.pcap" --secondary "$dir/secondary.pcap" --client "$dir/client.pcap" || status=$?
    case "$pair:$status" in
        identical:0) echo "demo: identical replicas: every byte matched (exit 0)" ;;
        diverge:1) echo "demo: diverging replicas: the differing byte was caught (exit 1)" ;;
        *) echo "demo: unexpected exit status $status for $pair" >&2; exit 1 ;;
    esac
done

for capture in tcp4-http udp4 frag4 tcp6-http ping6; do
    file=Tests/Fixtures/$capture.pcap
    echo
    echo "== colo-proxy conntrack --pcap $file --list"
    "$bin" conntrack --pcap "$file" --list
done

echo
echo "== summary over every sample capture"
for file in Tests/Fixtures/*.pcap; do
    "$bin" conntrack --pcap "$file" | awk -v f="$(basename "$file")" '
        { split($2, s, " "); n[$2]++; total++ }
        END { line = sprintf("%-16s %3d packets:", f, total); for (k in n) line = line sprintf(" %s=%d", k, n[k]); print line }'
done
