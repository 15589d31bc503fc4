#!/usr/bin/env bash
# The README's first command: sets everything up and runs the main job.
#
# The COLO demo lab (`colo-proxy demo`) is not built yet. Until it is, the main job is the connection
# tracker on the bundled sample captures (real traffic recorded by Tools/record-fixtures.sh): every packet's
# ct_state in OVS form, fragments tracked as whole datagrams, and the final table in `conntrack -L` form.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi

Tools/install-deps.sh
echo "demo: building colo-proxy (release)"
swift build -c release --product colo-proxy 2>&1 | tail -n 1
bin=$(swift build -c release --show-bin-path)/colo-proxy

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
