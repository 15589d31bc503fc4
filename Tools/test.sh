#!/usr/bin/env bash
# The test command (README, and what CI runs): installs what the tests need, builds, and runs every test,
# the network-namespace integration tests included. Run as root; the namespace tests fail clearly otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi

Tools/install-deps.sh

if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: not running as root: the network-namespace tests will fail (run: sudo Tools/test.sh)" >&2
fi

# The format STYLE.md asks for (the repository's .swift-format); any warning fails the run. The toolchain's
# swift-format, when this toolchain has one.
if command -v swift-format >/dev/null 2>&1; then
    echo "test.sh: swift-format lint"
    swift-format lint --strict -r Sources Tests Package.swift Benchmarks/Benchmarks Benchmarks/Package.swift
else
    echo "test.sh: no swift-format with this toolchain: format not checked" >&2
fi

echo "test.sh: building (debug, bounds-checked)"
swift build --build-tests
echo "test.sh: running tests"
swift test --skip-build
