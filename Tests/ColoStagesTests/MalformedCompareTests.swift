import ColoConntrack
import ColoPacket
import ColoPacketBuilder
import ColoStages
import Testing

/// SPEC §8: malformed packets are counted, the primary's released uncompared, and a `protocol` divergence when
/// only one side is malformed.
@Suite("colo-compare: malformed packets")
struct MalformedCompareTests {
    /// A TCP/IPv4 frame from the server whose IPv4 header length field is 4 words (below the minimum of 5).
    static func malformed(_ marker: UInt8) -> [UInt8] {
        var frame = PacketBuilder.tcp4(
            TCPSpec(sourcePort: 80, destinationPort: 40000, flags: [.ack], payload: [marker, marker, marker]))
        frame[14] = 0x44
        return frame
    }

    @Test("The test frames really are unparsable")
    func framesAreMalformed() {
        let frame = Self.malformed(1)
        let parsedOK = frame.withUnsafeBytes { (try? Packet($0, linkType: .ethernet)) != nil }
        #expect(!parsedOK)
    }

    @Test("Equal malformed packets on both sides: primary's released, secondary's dropped, no divergence")
    func bothMalformedEqual() {
        let h = PipelineHarness()
        let bad = Self.malformed(7)
        h.fromPrimary(bad)
        #expect(h.client == [bad], "released uncompared at once")
        h.fromSecondary(bad)
        #expect(h.client == [bad], "the secondary's copy is not released")
        #expect(h.events.isEmpty)
        #expect(h.pipeline.comparer.counters.malformed == 2)
        #expect(h.pipeline.comparer.counters.dropped == 1)
        #expect(h.pipeline.comparer.pendingMalformed == (0, 0))
        h.advance(5000 * ms)
        #expect(h.events.isEmpty, "nothing left to time out")
        #expect(h.store.inUse == 0)
    }

    @Test("Only the primary's packet is malformed: released, and a protocol divergence after the timeout")
    func onlyPrimaryMalformed() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.handshake(h)
        let bad = Self.malformed(3)
        h.fromPrimary(bad)
        #expect(h.client.last == bad, "released uncompared")
        let body = bytes(100)
        h.fromPrimary(c.primary([.ack], body))
        h.fromSecondary(c.secondary([.ack], body))  // well-formed where the primary sent a malformed packet
        #expect(h.events.isEmpty, "not yet: the secondary's malformed twin may still come")
        h.advance(3100 * ms)
        h.advance(1000 * ms)
        #expect(h.events.count == 1)
        let event = h.events.first
        #expect(event?.reason == .protocol)
        #expect(event?.primary?.frame == bad)
        #expect(event?.secondary == nil)
        #expect(event?.json.contains("\"reason\":\"protocol\"") == true)
        #expect(h.pipeline.comparer.counters.divergencesByReason[.protocol] == 1)
        #expect(h.pipeline.comparer.counters.malformed == 1)
        #expect(CompareTests.clientStream(h) == body, "the TCP stream is unaffected")
    }

    @Test("Only the secondary's packet is malformed: dropped, never released, a protocol divergence")
    func onlySecondaryMalformed() {
        let h = PipelineHarness { $0.onDivergence = .checkpoint }
        let bad = Self.malformed(5)
        h.fromSecondary(bad)
        #expect(h.client.isEmpty)
        #expect(h.pipeline.comparer.counters.dropped == 1)
        #expect(h.store.inUse == 0, "the frame is not held")
        h.advance(3100 * ms)
        #expect(h.events.map(\.reason) == [.protocol])
        #expect(h.events.first?.secondary?.frame == bad)
        #expect(h.events.first?.primary == nil)
        #expect(h.events.first?.action == .checkpoint)
        #expect(h.pipeline.comparer.checkpointRequested)
        #expect(h.client.isEmpty)
    }

    @Test("Different malformed packets on the two sides are a protocol divergence with both frames")
    func bothMalformedDifferent() {
        let h = PipelineHarness()
        let a = Self.malformed(1)
        let b = Self.malformed(2)
        h.fromSecondary(b)
        #expect(h.client.isEmpty)
        h.fromPrimary(a)
        #expect(h.client == [a])
        #expect(h.events.count == 1)
        #expect(h.events.first?.reason == .protocol)
        #expect(h.events.first?.primary?.frame == a)
        #expect(h.events.first?.secondary?.frame == b)
        #expect(h.pipeline.comparer.pendingMalformed == (0, 0))
    }

    @Test("Pending malformed packets are bounded: the oldest is reported when the list is full")
    func bounded() {
        let h = PipelineHarness()
        let limit = Comparer.maxPendingMalformed
        for i in 0...limit { h.fromPrimary(Self.malformed(UInt8(i & 0xFF))) }
        #expect(h.client.count == limit + 1, "every one released")
        #expect(h.pipeline.comparer.pendingMalformed.primary == limit)
        #expect(h.events.count == 1)
        #expect(h.events.first?.primary?.frame == Self.malformed(0))
    }

    @Test("A checkpoint forgets pending malformed packets")
    func checkpointForgets() {
        let h = PipelineHarness()
        h.fromPrimary(Self.malformed(9))
        h.pipeline.checkpointDone(now: h.now)
        h.collect()
        h.advance(5000 * ms)
        #expect(h.events.isEmpty)
        #expect(h.pipeline.comparer.pendingMalformed == (0, 0))
    }
}
