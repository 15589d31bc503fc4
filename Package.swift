// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "colo-proxy",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "colo-proxy", targets: ["colo-proxy"]),
        .library(name: "ColoPacket", targets: ["ColoPacket"]),
        .library(name: "ColoPacketBuilder", targets: ["ColoPacketBuilder"]),
        .library(name: "ColoCapture", targets: ["ColoCapture"]),
        .library(name: "ColoFragments", targets: ["ColoFragments"]),
        .library(name: "ColoConntrack", targets: ["ColoConntrack"]),
        .library(name: "ColoStages", targets: ["ColoStages"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
    ],
    targets: [
        // C libraries from Debian, wrapped for Swift.
        .systemLibrary(
            name: "CNetfilterQueue",
            pkgConfig: "libnetfilter_queue",
            providers: [.apt(["libnetfilter-queue-dev", "libnfnetlink-dev"])]
        ),

        // Small C helpers Swift cannot express directly (prefetch hints; the TUN ioctls will join them).
        .target(name: "CColoLinux"),

        // Zero-copy views over packet bytes: L2/L3/L4 headers, options, checksums.
        .target(name: "ColoPacket"),
        // Builds packets with chosen fields, for tests, benchmarks and tools (allocates; not for hot paths).
        .target(name: "ColoPacketBuilder", dependencies: ["ColoPacket"]),
        // pcap / pcapng reading and pcap writing.
        .target(name: "ColoCapture", dependencies: ["ColoPacket"]),
        // IPv4/IPv6 fragment reassembly with bounded memory (the tracker and the comparer see whole datagrams).
        .target(name: "ColoFragments", dependencies: ["ColoPacket"]),
        // Connection tracking with OVS-style ct_state: table, per-protocol trackers, listing and events.
        .target(name: "ColoConntrack", dependencies: ["ColoPacket", "ColoFragments", "CColoLinux"]),
        // The COLO stages (mirror, redirector, rewriter, compare, conntrack, dump), their `--object` specs and the
        // pipeline that chains them.
        .target(
            name: "ColoStages",
            dependencies: ["ColoPacket", "ColoConntrack", "ColoFragments", "ColoCapture", "CColoLinux"]
        ),
        // Ports: where packets come from and go to (QEMU chardev sockets, TAP/TUN, NFQUEUE, pcap).
        .target(
            name: "ColoPorts",
            dependencies: ["ColoPacket", "ColoCapture", "ColoNetfilter", "CColoLinux"]
        ),
        // The QMP control socket: protocol, commands and events.
        .target(name: "ColoControl"),
        // The running proxy: ports, stages and the control socket wired together.
        .target(
            name: "ColoRuntime",
            dependencies: [
                "ColoPacket", "ColoCapture", "ColoConntrack", "ColoFragments", "ColoStages", "ColoPorts", "ColoControl",
                "ColoNetfilter", "ColoMetrics",
            ]
        ),
        // Prometheus metrics: a snapshot the runtime fills, and a small HTTP server that renders it on each scrape.
        .target(
            name: "ColoMetrics",
            dependencies: [
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        // Linux netfilter queue binding (verdicts for the primary's output).
        .target(name: "ColoNetfilter", dependencies: ["CNetfilterQueue"]),
        // The subcommands, as a library so tests can drive them.
        .target(
            name: "ColoCLI",
            dependencies: [
                "ColoPacket", "ColoCapture", "ColoFragments", "ColoConntrack", "ColoStages", "ColoPorts", "ColoControl",
                "ColoRuntime", "ColoMetrics", "ColoLab", "ColoPacketBuilder",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]
        ),
        // The single-host namespace lab of LAB.md (client, primary, secondary on TAP devices, real servers and
        // clients), shared by `colo-proxy demo` and the integration tests.
        .target(
            name: "ColoLab", dependencies: ["ColoRuntime", "ColoPorts", "ColoStages", "ColoControl", "ColoConntrack"]),
        .executableTarget(name: "colo-proxy", dependencies: ["ColoCLI"]),

        .testTarget(name: "ColoPacketTests", dependencies: ["ColoPacket", "ColoPacketBuilder", "ColoCapture"]),
        .testTarget(name: "ColoCaptureTests", dependencies: ["ColoCapture", "ColoPacket", "ColoPacketBuilder"]),
        .testTarget(name: "ColoFragmentsTests", dependencies: ["ColoFragments", "ColoPacket", "ColoPacketBuilder"]),
        .testTarget(
            name: "ColoConntrackTests",
            dependencies: [
                "ColoConntrack", "ColoFragments", "ColoPacket", "ColoPacketBuilder", "ColoCapture", "ColoCLI",
            ]
        ),
        // Helpers shared by the test targets that run real programs (commands with a clean signal state, root check).
        .target(name: "ColoTestSupport", dependencies: ["ColoLab"], path: "Tests/ColoTestSupport"),
        // Tests on real Linux stacks in network namespaces (root; they fail, never skip, without it).
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "ColoCLI", "ColoConntrack", "ColoCapture", "ColoPacket", "ColoTestSupport", "ColoRuntime", "ColoPorts",
                "ColoControl", "ColoStages", "CColoLinux", "ColoLab",
            ]
        ),
        .testTarget(
            name: "ColoStagesTests",
            dependencies: ["ColoStages", "ColoConntrack", "ColoPacket", "ColoPacketBuilder", "ColoCapture"]
        ),
        .testTarget(
            name: "ColoCLITests",
            dependencies: [
                "ColoCLI", "ColoStages", "ColoCapture", "ColoControl", "ColoTestSupport", "ColoPacket",
                "ColoPacketBuilder",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "ColoPortsTests",
            dependencies: ["ColoPorts", "ColoPacket", "ColoPacketBuilder", "ColoCapture", "ColoTestSupport"]
        ),
        .testTarget(
            name: "ColoControlTests", dependencies: ["ColoControl", "ColoTestSupport"], exclude: ["qmp_client.py"]
        ),
        .testTarget(
            name: "ColoRuntimeTests",
            dependencies: [
                "ColoRuntime", "ColoCLI", "ColoStages", "ColoControl", "ColoPacket", "ColoPacketBuilder", "ColoMetrics",
                "ColoCapture", "ColoConntrack", "ColoFragments", "ColoTestSupport",
            ]
        ),
        .testTarget(name: "ColoMetricsTests", dependencies: ["ColoMetrics", "ColoTestSupport"]),
        .testTarget(
            name: "InteropTests",
            dependencies: [
                "ColoRuntime", "ColoPorts", "ColoStages", "ColoCLI", "ColoTestSupport", "ColoPacket",
                "ColoPacketBuilder",
            ]),
        .testTarget(name: "ColoNetfilterTests", dependencies: ["ColoNetfilter", "ColoTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
