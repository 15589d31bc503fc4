import ColoPacket
import Testing

@testable import ColoStages

@Suite("Client acks paced to a lagging secondary")
struct SecondaryHoldTests {
    @Test(
        "Acks for bytes the secondary has not sent go lowered to what it sent; the whole ACK follows once it has",
        arguments: [false, true])
    func pacedUntilTheSecondaryCatchesUp(v6: Bool) throws {
        let h = PipelineHarness()
        var c = ReplicaConversation(v6: v6)
        c.handshake(h)
        let offset = c.secondaryISN &- c.primaryISN
        let secondaryStart = c.secondaryNext
        let sentBefore = h.secondary.count
        // The primary answers 3000 bytes; the client acks them and sends its next request. The secondary has
        // not answered yet: in its space both acknowledge unsent data, which its TCP would discard.
        let answer = bytes(3000, seed: 9)
        h.fromPrimary(c.primary([.ack, .psh], answer))
        h.fromClient(c.client(.ack))
        let request = Array("GET /next HTTP/1.1\r\n\r\n".utf8)
        h.fromClient(c.client([.ack, .psh], request))
        try #require(h.secondary.count == sentBefore + 2, "both go at once")
        let ack = try #require(parsed(h.secondary[sentBefore]))
        let data = try #require(parsed(h.secondary[sentBefore + 1]))
        #expect(ack.ack == secondaryStart && ack.checksumValid, "lowered to what the secondary sent")
        #expect(data.ack == secondaryStart && data.payload == request && data.checksumValid)
        #expect(h.pipeline.heldForSecondary == 1, "the pure ACK is kept whole for later")
        #expect(h.primary.last.flatMap { parsed($0)?.ack } == c.primaryNext, "the primary's copies are untouched")

        // The secondary sends the first 1000 bytes: not yet as far as the kept ACK, so a lowered copy of it
        // acknowledges those 1000 (the client has them, from the primary).
        h.fromSecondary(c.secondary([.ack], Array(answer[0..<1000])))
        try #require(h.secondary.count == sentBefore + 3)
        let partial = try #require(parsed(h.secondary[sentBefore + 2]))
        #expect(partial.ack == secondaryStart &+ 1000 && partial.payload.isEmpty && partial.checksumValid)
        #expect(h.pipeline.heldForSecondary == 1)
        // A retransmission of those bytes adds nothing.
        h.fromSecondary(try secondaryRetransmission(&c, Array(answer[0..<1000]), at: secondaryStart))
        #expect(h.secondary.count == sentBefore + 3)
        // The rest: the whole ACK goes, in the secondary's space.
        h.fromSecondary(c.secondary([.ack, .psh], Array(answer[1000...])))
        try #require(h.secondary.count == sentBefore + 4)
        let whole = try #require(parsed(h.secondary[sentBefore + 3]))
        #expect(whole.ack == c.primaryNext &+ offset && whole.payload.isEmpty && whole.checksumValid)
        #expect(h.pipeline.heldForSecondary == 0)
        #expect(h.pipeline.holdCounters.clamped == 3)
        #expect(h.pipeline.holdCounters.delivered == 1)
        // Caught up: the next ack goes unchanged.
        h.fromClient(c.client(.ack))
        #expect(h.secondary.last.flatMap { parsed($0)?.ack } == c.primaryNext &+ offset)
        #expect(h.pipeline.holdCounters.clamped == 3)
        #expect(h.events.isEmpty)
    }

    @Test("The hold word keeps a connection's hold index and the secondary's furthest end apart, per checkpoint")
    func holdWordFields() {
        var word = HoldWord(raw: 0)
        #expect(word.holdIndexPlusOne == 0 && word.sent(epoch: 0) == nil)
        word = word.withHold(7)
        word = word.withSent(0xFFFF_FFF0, epoch: 3)
        #expect(word.holdIndexPlusOne == 7, "recording an end keeps the hold")
        #expect(word.sent(epoch: 3) == 0xFFFF_FFF0)
        #expect(word.sent(epoch: 4) == nil, "an end from before a checkpoint is not used after it")
        word = word.withHold(0)
        #expect(word.holdIndexPlusOne == 0 && word.sent(epoch: 3) == 0xFFFF_FFF0, "removing the hold keeps the end")
        word = word.withHold(1024).withSent(12, epoch: 3 + 0x8000)
        #expect(word.holdIndexPlusOne == 1024 && word.sent(epoch: 3) == 12, "epochs compare in 15 bits")
    }

    @Test("A secondary that never catches up: the kept ACK is dropped after the hold timeout, counted")
    func expires() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.handshake(h)
        let sentBefore = h.secondary.count
        h.fromPrimary(c.primary([.ack, .psh], bytes(500)))
        h.fromClient(c.client(.ack))
        #expect(h.secondary.count == sentBefore + 1, "the lowered copy")
        #expect(h.pipeline.heldForSecondary == 1)
        h.advance(100 * ms)
        #expect(h.pipeline.heldForSecondary == 1, "still kept")
        h.advance(3000 * ms)
        #expect(h.pipeline.heldForSecondary == 0)
        #expect(h.pipeline.holdCounters.dropped == 1)
        #expect(h.secondary.count == sentBefore + 1)
    }

    @Test("A newer ACK replaces the kept one; a checkpoint drops it; after it nothing is paced")
    func replacedAndCheckpointed() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.handshake(h)
        h.fromPrimary(c.primary([.ack, .psh], bytes(500)))
        h.fromClient(c.client(.ack))
        h.fromPrimary(c.primary([.ack, .psh], bytes(500, seed: 2)))
        h.fromClient(c.client(.ack))
        #expect(h.pipeline.heldForSecondary == 1)
        #expect(h.pipeline.holdCounters.dropped == 1, "the older kept ACK was superseded")
        h.pipeline.checkpointDone(now: h.now)
        h.collect()
        #expect(h.pipeline.heldForSecondary == 0)
        #expect(h.pipeline.holdCounters.dropped == 2)
        let clamped = h.pipeline.holdCounters.clamped
        h.fromPrimary(c.primary([.ack, .psh], bytes(500, seed: 3)))
        h.fromClient(c.client(.ack))
        #expect(h.pipeline.holdCounters.clamped == clamped, "offsets of the old epoch: not paced")
    }
}

/// The secondary sending `payload` again from `seq` (its own space), leaving the conversation's counters alone.
func secondaryRetransmission(_ c: inout ReplicaConversation, _ payload: [UInt8], at seq: UInt32) throws -> [UInt8] {
    let next = c.secondaryNext
    c.secondaryNext = seq
    defer { c.secondaryNext = next }
    return c.secondary([.ack], payload)
}
