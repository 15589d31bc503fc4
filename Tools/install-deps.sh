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
    tcpdump tshark iputils-ping curl socat iperf3 python3 python3-pip ethtool
    # QEMU's standalone colo-compare: the reference for the interop tests and the benchmark (issue 5)
    qemu-system-x86
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

# Python packages the tests drive the proxy with (not packaged by Debian): the QMP client library.
python_packages=("qemu.qmp==0.0.6")
install_python_packages() {
    local python
    python=$(command -v python3) || { echo "install-deps: python3 not found" >&2; return 1; }
    if ! "$python" -c 'import qemu.qmp' 2>/dev/null; then
        echo "install-deps: installing ${python_packages[*]} for $python"
        "$python" -m pip install --quiet "${python_packages[@]}" 2>/dev/null \
            || "$python" -m pip install --quiet --break-system-packages "${python_packages[@]}"
    fi
}

if [ ${#missing[@]} -eq 0 ]; then
    install_python_packages
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
install_python_packages
echo "install-deps: done"
