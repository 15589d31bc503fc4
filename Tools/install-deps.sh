#!/usr/bin/env bash
# Installs the Debian packages that building, testing and the demo lab need.
# Idempotent: when everything is present it prints one line and exits.
set -euo pipefail

packages=(
    # build: C libraries wrapped by the CNetfilterQueue target
    libnetfilter-queue-dev libnfnetlink-dev pkg-config
    # lab: namespaces, veth, TAP, netfilter and the kernel's tracker
    iproute2 iptables conntrack kmod
    # traffic and captures for fixtures and integration tests
    tcpdump tshark iputils-ping curl socat iperf3 python3 ethtool
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} Debian packages present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages (${missing[*]}); run as root to install them" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
