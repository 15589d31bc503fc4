import ColoPacket
import ColoPacketBuilder
import Testing

@testable import ColoStages

/// `Comparer.matchesHead` settles a segment that exactly matches the other side's queue head without queueing it.
/// It must change nothing but the work done: these runs feed the same frames, in the same order, to a comparer with
/// it and to one without it, and require the same frames out, in the same order, the same events and counters.
@Suite("colo-compare's head match against the general path")
struct CompareHeadMatchTests {
    /// Frames of one connection for both replicas: mostly the same cuts on both sides (the case the head match
    /// serves), with some cuts split or merged on one side only, retransmissions, pure ACKs, an optional changed
    /// byte, and FINs at the end.
    enum Side { case client, primary, secondary }

    struct Plan {
        var handshake: [(Side, [UInt8])]
        var primary: [[UInt8]]
        var secondary: [[UInt8]]
        /// Arrival order after the handshake: true = next primary frame, false = next secondary frame.
        var order: [Bool]
    }

    static func plan(seed: UInt64, changeByte: Bool) -> Plan {
        var rng = SplitMix(seed: seed)
        var c = ReplicaConversation()
        c.primaryISN = UInt32.random(in: 0...UInt32.max, using: &rng)
        c.primaryNext = c.primaryISN
        c.secondaryISN = UInt32.random(in: 0...UInt32.max, using: &rng)
        c.secondaryNext = c.secondaryISN
        let body = (0..<Int.random(in: 1...12000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var secondaryBody = body
        if changeByte {
            secondaryBody[Int.random(in: 0..<body.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
        }
        var cuts: [Int] = []
        var total = 0
        while total < body.count {
            let size = min(Int.random(in: 1...1448, using: &rng), body.count - total)
            cuts.append(size)
            total += size
        }
        func frames(_ bytes: [UInt8], primary: Bool, rng: inout SplitMix) -> [[UInt8]] {
            var out: [[UInt8]] = []
            var sent: [(UInt32, [UInt8])] = []
            var offset = 0
            var index = 0
            func send(_ chunk: [UInt8]) {
                sent.append((primary ? c.primaryNext : c.secondaryNext, chunk))
                out.append(primary ? c.primary([.ack], chunk) : c.secondary([.ack], chunk))
            }
            while index < cuts.count {
                var size = cuts[index]
                index += 1
                switch Int.random(in: 0..<12, using: &rng) {
                case 0 where size > 1:
                    // Split on this side only.
                    let first = Int.random(in: 1..<size, using: &rng)
                    send(Array(bytes[offset..<(offset + first)]))
                    offset += first
                    size -= first
                case 1 where index < cuts.count:
                    // Merged with the next cut on this side only.
                    size += cuts[index]
                    index += 1
                case 2:
                    out.append(primary ? c.primary([.ack]) : c.secondary([.ack]))
                default:
                    break
                }
                send(Array(bytes[offset..<(offset + size)]))
                if Int.random(in: 0..<10, using: &rng) == 0 {
                    // Sent twice in a row (a retransmission right away): two in the queue at the same start.
                    let (seq, chunk) = sent[sent.count - 1]
                    var again = c
                    if primary { again.primaryNext = seq } else { again.secondaryNext = seq }
                    out.append(primary ? again.primary([.ack], chunk) : again.secondary([.ack], chunk))
                }
                offset += size
                if Int.random(in: 0..<10, using: &rng) == 0, let old = sent.randomElement(using: &rng) {
                    var again = c
                    if primary { again.primaryNext = old.0 } else { again.secondaryNext = old.0 }
                    out.append(primary ? again.primary([.ack], old.1) : again.secondary([.ack], old.1))
                }
            }
            out.append(primary ? c.primary([.fin, .ack]) : c.secondary([.fin, .ack]))
            return out
        }
        // The handshake as `ReplicaConversation.handshake` plays it, recorded so that both runs get it.
        let options: [TCPOptionSpec] = [.maximumSegmentSize(1460), .sackPermitted, .windowScale(7)]
        let handshake = [
            (Side.client, c.client(.syn, options: options)), (.primary, c.primary([.syn, .ack], options: options)),
            (.secondary, c.secondary([.syn, .ack], options: options)), (.client, c.client(.ack)),
        ]
        let p = frames(body, primary: true, rng: &rng)
        let s = frames(secondaryBody, primary: false, rng: &rng)
        // Arrival order in runs, so that either side leads by a few segments at times.
        var order: [Bool] = []
        var (pLeft, sLeft) = (p.count, s.count)
        while pLeft > 0 || sLeft > 0 {
            let fromPrimary = sLeft == 0 || (pLeft > 0 && Bool.random(using: &rng))
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                if fromPrimary && pLeft > 0 {
                    order.append(true)
                    pLeft -= 1
                } else if !fromPrimary && sLeft > 0 {
                    order.append(false)
                    sLeft -= 1
                }
            }
        }
        return Plan(handshake: handshake, primary: p, secondary: s, order: order)
    }

    static func run(_ plan: Plan, headMatch: Bool) -> PipelineHarness {
        let h = PipelineHarness()
        h.pipeline.comparer.matchesHeads = headMatch
        for (side, frame) in plan.handshake {
            switch side {
            case .client: h.fromClient(frame)
            case .primary: h.fromPrimary(frame)
            case .secondary: h.fromSecondary(frame)
            }
        }
        var p = plan.primary[...]
        var s = plan.secondary[...]
        for fromPrimary in plan.order {
            if fromPrimary { h.fromPrimary(p.removeFirst()) } else { h.fromSecondary(s.removeFirst()) }
        }
        return h
    }

    @Test(
        "Same frames out, same order, same events and counters, with and without the head match",
        arguments: 0..<60)
    func sameOutcome(seed: Int) {
        let plan = Self.plan(seed: UInt64(seed) &* 0x2545_F491, changeByte: seed % 3 == 2)
        let fast = Self.run(plan, headMatch: true)
        let general = Self.run(plan, headMatch: false)
        #expect(fast.client == general.client, "seed \(seed): released frames differ")
        #expect(fast.events.map(\.summary) == general.events.map(\.summary), "seed \(seed)")
        #expect(fast.pipeline.comparer.counters == general.pipeline.comparer.counters, "seed \(seed)")
        #expect(fast.pipeline.comparer.queuedPackets == general.pipeline.comparer.queuedPackets, "seed \(seed)")
        #expect(fast.pipeline.comparer.queuedPackets == fast.pipeline.comparer.queuedPacketsByWalk, "seed \(seed)")
        #expect(fast.store.inUse == general.store.inUse, "seed \(seed)")
        #expect(general.pipeline.comparer.headMatched == 0, "seed \(seed)")
        // The plans diverge only when a byte was changed.
        if seed % 3 != 2 { #expect(general.events.isEmpty, "seed \(seed): \(general.events.map(\.summary))") }
    }

    @Test("The plans of the comparison above do exercise the head match")
    func plansExerciseHeadMatch() {
        var used = 0
        for seed in 0..<60 {
            let h = Self.run(Self.plan(seed: UInt64(seed) &* 0x2545_F491, changeByte: seed % 3 == 2), headMatch: true)
            if h.pipeline.comparer.headMatched > 0 { used += 1 }
        }
        #expect(used >= 30, "only \(used) of 60 plans reached the head match")
    }

    @Test("Equal, equally cut streams are settled by the head match, in either arrival order")
    func headMatchIsUsed() {
        for headMatch in [true, false] {
            var c = ReplicaConversation()
            let h = PipelineHarness()
            h.pipeline.comparer.matchesHeads = headMatch
            c.handshake(h)
            let released = h.client.count
            for i in 0..<200 {
                let payload = [UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 100)
                // Primary first for the first half, secondary first for the second.
                if i < 100 {
                    h.fromPrimary(c.primary([.ack], payload))
                    h.fromSecondary(c.secondary([.ack], payload))
                } else {
                    h.fromSecondary(c.secondary([.ack], payload))
                    h.fromPrimary(c.primary([.ack], payload))
                }
            }
            #expect(h.events.isEmpty)
            #expect(h.client.count == released + 200)
            #expect(h.pipeline.comparer.counters.bytesCompared == 20000)
            #expect(h.pipeline.comparer.queuedPackets == (0, 0))
            // Every second arrival finds its twin at the head of the other queue.
            #expect(h.pipeline.comparer.headMatched == (headMatch ? 200 : 0), "head match \(headMatch)")
        }
    }
}
