// swift-tools-version: 6.1
// Benchmarks live in their own package so that the main build and CI do not compile package-benchmark.
// Run from this directory: `swift package benchmark` (see ../README.md and BENCHMARKS.md).
import PackageDescription

import struct Foundation.URL

// A path dependency's identity is its folder name, which is whatever the checkout is called.
let mainPackage = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .lastPathComponent

let package = Package(
    name: "colo-proxy-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "PacketBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ColoPacket", package: mainPackage),
                .product(name: "ColoPacketBuilder", package: mainPackage),
            ],
            path: "Benchmarks/PacketBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "ConntrackBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ColoPacket", package: mainPackage),
                .product(name: "ColoPacketBuilder", package: mainPackage),
                .product(name: "ColoConntrack", package: mainPackage),
            ],
            path: "Benchmarks/ConntrackBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // The generated replica streams both the stages benchmark and the profiling loop run.
        .target(
            name: "StagesSupport",
            dependencies: [
                .product(name: "ColoPacket", package: mainPackage),
                .product(name: "ColoPacketBuilder", package: mainPackage),
                .product(name: "ColoConntrack", package: mainPackage),
                .product(name: "ColoStages", package: mainPackage),
            ],
            path: "Benchmarks/StagesSupport"
        ),
        .executableTarget(
            name: "StagesBenchmarks",
            dependencies: [
                "StagesSupport",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ColoPacket", package: mainPackage),
                .product(name: "ColoPacketBuilder", package: mainPackage),
                .product(name: "ColoConntrack", package: mainPackage),
                .product(name: "ColoStages", package: mainPackage),
            ],
            path: "Benchmarks/StagesBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // A plain loop to run under `perf record` (the benchmark runner mixes setup and statistics into profiles).
        .executableTarget(
            name: "ConntrackProfile",
            dependencies: [
                .product(name: "ColoPacket", package: mainPackage),
                .product(name: "ColoPacketBuilder", package: mainPackage),
                .product(name: "ColoConntrack", package: mainPackage),
                .product(name: "ColoStages", package: mainPackage),
                "StagesSupport",
            ],
            path: "Benchmarks/ConntrackProfile"
        ),
    ],
    swiftLanguageModes: [.v6]
)
