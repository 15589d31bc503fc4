import Benchmark
import ColoPacket
import ColoPacketBuilder

// Each benchmark iteration handles `batch` packets, so the wall-clock figure divided by `batch` is the per-packet
// cost; the malloc count must stay 0 for the whole iteration.
let batch = 1_000_000

/// Keeps a result alive without the cost of a generic call (package-benchmark's `blackHole` is generic and,
/// across the module boundary, goes through value witnesses).
@inline(never) func consume(_ value: Int) { sink &+= value }
nonisolated(unsafe) var sink = 0

/// Parses `frame` `benchmark.scaledIterations` times into a reused layout (the hot-path form).
func parseLoop(_ benchmark: Benchmark, _ frame: [UInt8]) {
    frame.withUnsafeBytes { raw in
        var layout = PacketLayout()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            do { try PacketParser.parse(raw, linkType: .ethernet, into: &layout) } catch { consume(-1) }
            consume(layout.payloadOffset)
        }
        benchmark.stopMeasurement()
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .instructions],
        warmupIterations: 2,
        scalingFactor: .mega,
        maxDuration: .seconds(5),
        maxIterations: 20
    )

    let tcp4 = PacketBuilder.tcp4(
        TCPSpec(
            sequenceNumber: 1_000_000, acknowledgmentNumber: 2_000_000, flags: [.ack, .psh],
            options: [.noOperation, .noOperation, .timestamp(value: 123_456, echoReply: 654_321)],
            payload: [UInt8](repeating: 0x61, count: 100)))
    let tcp6 = PacketBuilder.tcp6(
        TCPSpec(
            sequenceNumber: 1_000_000, acknowledgmentNumber: 2_000_000, flags: [.ack, .psh],
            payload: [UInt8](repeating: 0x61, count: 100)))

    Benchmark("parse Ethernet+IPv4+TCP(timestamps)") { benchmark in parseLoop(benchmark, tcp4) }

    // Baseline measured in the same run: copying the frame (what any stage that touches a packet pays at least).
    Benchmark("baseline: copy the 166-byte Ethernet+IPv4+TCP frame") { benchmark in
        var destination = [UInt8](repeating: 0, count: tcp4.count)
        tcp4.withUnsafeBytes { raw in
            destination.withUnsafeMutableBytes { out in
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    out.copyMemory(from: raw)
                    consume(Int(out[60]))
                }
                benchmark.stopMeasurement()
            }
        }
    }

    Benchmark("parse Ethernet+IPv6+TCP") { benchmark in parseLoop(benchmark, tcp6) }

    Benchmark("rewrite seq+ack with incremental checksum") { benchmark in
        var frame = tcp4
        let layout = frame.withUnsafeBytes { (try? PacketParser.parse($0, linkType: .ethernet)) ?? PacketLayout() }
        frame.withUnsafeMutableBytes { raw in
            benchmark.startMeasurement()
            for i in benchmark.scaledIterations {
                TCPFieldEditor.addToSequenceAndAcknowledgment(
                    sequenceDelta: UInt32(truncatingIfNeeded: i), ackDelta: 0 &- UInt32(truncatingIfNeeded: i),
                    in: raw, layout: layout)
            }
            benchmark.stopMeasurement()
        }
        blackHole(frame)
    }

    Benchmark("verify TCP checksum (100-byte payload)") { benchmark in
        tcp4.withUnsafeBytes { raw in
            let layout = (try? PacketParser.parse(raw, linkType: .ethernet)) ?? PacketLayout()
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                if case .valid = Packet(bytes: raw, layout: layout).transportChecksumStatus { consume(1) }
            }
            benchmark.stopMeasurement()
        }
    }
}
