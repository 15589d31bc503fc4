#!/usr/bin/env bash
# The README's first command: installs what the lab needs, builds colo-proxy (release) and runs the COLO demo:
# a client namespace and two cloned replica namespaces with real web servers, the proxy in between (root).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi

Tools/install-deps.sh
echo "demo: building colo-proxy (release)"
swift build -c release --product colo-proxy 2>&1 | tail -n 1
exec .build/release/colo-proxy demo --scenario all "$@"
