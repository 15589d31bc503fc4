import ColoPacket
import ColoPacketBuilder
import ColoStages
import Testing

/// Random segmentations, arrival orders and retransmissions of the same byte stream on both replicas.
@Suite("colo-compare on randomized streams")
struct CompareRandomizedTests {
    struct Plan {
        var primary: [[UInt8]]
        var secondary: [[UInt8]]
        /// Arrival order: true = next primary segment, false = next secondary segment.
        var order: [Bool]
    }

    /// Cuts `body` into random segments (1...1448 bytes), with occasional retransmissions of earlier segments.
    static func segments(
        _ body: [UInt8], _ c: inout ReplicaConversation, primary: Bool, rng: inout some RandomNumberGenerator
    )
        -> [[UInt8]]
    {
        var frames: [[UInt8]] = []
        var sent: [(UInt32, [UInt8])] = []
        var offset = 0
        while offset < body.count {
            let size = min(Int.random(in: 1...1448, using: &rng), body.count - offset)
            let chunk = Array(body[offset..<(offset + size)])
            let seq = primary ? c.primaryNext : c.secondaryNext
            frames.append(primary ? c.primary([.ack], chunk) : c.secondary([.ack], chunk))
            sent.append((seq, chunk))
            offset += size
            if Int.random(in: 0..<8, using: &rng) == 0, let old = sent.randomElement(using: &rng) {
                // A retransmission of something already sent.
                var again = c
                if primary { again.primaryNext = old.0 } else { again.secondaryNext = old.0 }
                frames.append(primary ? again.primary([.ack], old.1) : again.secondary([.ack], old.1))
            }
        }
        return frames
    }

    /// Runs the plan; returns the harness and the byte stream the client can reassemble from the released
    /// segments (placed by sequence number; nil where nothing was released).
    /// `totalsWrong` counts the steps after which the comparer's running queue totals differed from a count of
    /// every connection's queues.
    static func run(_ body: [UInt8], secondaryBody: [UInt8], seed: UInt64) -> (
        PipelineHarness, [UInt8?], totalsWrong: Int
    ) {
        var rng = SplitMix(seed: seed)
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.primaryISN = UInt32.random(in: 0...UInt32.max, using: &rng)
        c.primaryNext = c.primaryISN
        c.secondaryISN = UInt32.random(in: 0...UInt32.max, using: &rng)
        c.secondaryNext = c.secondaryISN
        c.handshake(h)
        var p = segments(body, &c, primary: true, rng: &rng)[...]
        var s = segments(secondaryBody, &c, primary: false, rng: &rng)[...]
        var totalsWrong = 0
        while !p.isEmpty || !s.isEmpty {
            if !p.isEmpty && (s.isEmpty || Bool.random(using: &rng)) {
                h.fromPrimary(p.removeFirst())
            } else {
                h.fromSecondary(s.removeFirst())
            }
            if h.pipeline.comparer.queuedPackets != h.pipeline.comparer.queuedPacketsByWalk { totalsWrong += 1 }
        }
        var stream = [UInt8?](repeating: nil, count: body.count)
        for frame in h.client {
            guard let segment = parsed(frame), !segment.payload.isEmpty else { continue }
            let start = Int(segment.seq &- c.primaryISN &- 1)
            for (i, byte) in segment.payload.enumerated() where start + i < stream.count {
                if let existing = stream[start + i], existing != byte {
                    stream[start + i] = nil
                } else {
                    stream[start + i] = byte
                }
            }
        }
        return (h, stream, totalsWrong)
    }

    @Test("Equal streams never diverge, whatever the segmentation, order and retransmissions", arguments: 0..<40)
    func equalStreams(seed: Int) {
        var rng = SplitMix(seed: UInt64(seed) &* 0x9E37_79B9)
        let body = (0..<Int.random(in: 1...30000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let (h, stream, totalsWrong) = Self.run(body, secondaryBody: body, seed: UInt64(seed))
        #expect(h.events.isEmpty, "seed \(seed): \(h.events.map(\.summary))")
        #expect(totalsWrong == 0, "seed \(seed): queue totals drifted")
        // Every byte of the primary's stream reached the client (retransmissions repeat some, consistently).
        #expect(stream.map { $0 ?? 0 } == body && !stream.contains(nil), "seed \(seed)")
        #expect(h.pipeline.comparer.counters.bytesCompared == UInt64(body.count), "seed \(seed)")
    }

    @Test("One changed byte anywhere is found, at its offset, exactly once", arguments: 0..<40)
    func oneChangedByte(seed: Int) {
        var rng = SplitMix(seed: UInt64(seed) &* 0xC2B2_AE3D)
        let body = (0..<Int.random(in: 2...30000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var changed = body
        let changedIndex = Int.random(in: 0..<body.count, using: &rng)
        changed[changedIndex] ^= UInt8.random(in: 1...255, using: &rng)
        let (h, _, totalsWrong) = Self.run(body, secondaryBody: changed, seed: UInt64(seed))
        #expect(totalsWrong == 0, "seed \(seed): queue totals drifted after the divergence")
        #expect(h.events.count == 1, "seed \(seed): \(h.events.map(\.summary))")
        #expect(h.events.first?.streamOffset == UInt64(changedIndex), "seed \(seed)")
    }
}

/// A small deterministic generator, so a failing seed can be replayed.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
