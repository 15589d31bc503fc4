import Benchmark
import ColoConntrack
import ColoPacket
import ColoPacketBuilder
import ColoStages
import StagesSupport

// Rewriter + compare on a generated stream: 64 connections, each replica sending the same bytes with its own
// ISN. One benchmark iteration is `scaledIterations` packet *pairs* (one primary and one secondary segment),
// taken round-robin over the connections; each pair is stored (copied into the packet store as a port would),
// parsed, tracked in its replica's zone, rewritten (secondary), compared, and the released primary collected.

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        warmupIterations: 1,
        scalingFactor: .kilo,
        maxDuration: .seconds(5),
        maxIterations: 50
    )

    Benchmark("rewriter+compare, 64 connections, 100-byte segments (per 1000 pairs)") { benchmark, generator in
        benchmark.startMeasurement()
        generator.run(pairs: benchmark.scaledIterations.count)
        benchmark.stopMeasurement()
        if !generator.pipeline.comparer.events.isEmpty { fatalError("the generated streams must not diverge") }
    } setup: {
        StreamGenerator(payloadSize: 100)
    }

    Benchmark("rewriter+compare, 64 connections, 1448-byte segments (per 1000 pairs)") { benchmark, generator in
        benchmark.startMeasurement()
        generator.run(pairs: benchmark.scaledIterations.count)
        benchmark.stopMeasurement()
        if !generator.pipeline.comparer.events.isEmpty { fatalError("the generated streams must not diverge") }
    } setup: {
        StreamGenerator(payloadSize: 1448)
    }

    // Baseline measured in the same run: only storing the two frames (the copy a port makes) and freeing them.
    Benchmark("baseline: store and free a pair of 1448-byte frames (per 1000 pairs)") { benchmark, generator in
        benchmark.startMeasurement()
        var n = 0
        for _ in benchmark.scaledIterations {
            if let p = generator.receive(n, primary: true) { generator.store.release(p) }
            if let s = generator.receive(n, primary: false) { generator.store.release(s) }
            n = n + 1 == connectionCount ? 0 : n + 1
        }
        benchmark.stopMeasurement()
    } setup: {
        StreamGenerator(payloadSize: 1448)
    }
}
