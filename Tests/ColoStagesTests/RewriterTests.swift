import ColoConntrack
import ColoPacket
import ColoPacketBuilder
import ColoStages
import Testing

@Suite("filter-rewriter")
struct RewriterTests {
    /// Stores a secondary packet, tracks it in the secondary's zone and rewrites it, returning the result.
    static func rewrittenFromSecondary(_ h: PipelineHarness, _ frame: [UInt8]) -> [UInt8] {
        guard let ref = frame.withUnsafeBytes({ h.store.store($0, linkType: .ethernet, source: .secondary, receivedAt: h.now) })
        else { return [] }
        h.store.metadata(ref).pointee.track = h.pipeline.tracker.track(
            h.store.packet(ref), zone: ColoPipeline.secondaryZone, now: h.now)
        h.pipeline.rewriter.rewriteFromSecondary(ref, in: h.store)
        defer { h.store.release(ref) }
        return Array(h.store.frame(ref))
    }

    @Test("Client-initiated, IPv4 and IPv6: every later segment carries the right seq/ack/SACK edges and checksum",
        arguments: [false, true])
    func clientInitiated(v6: Bool) throws {
        let h = PipelineHarness()
        var c = ReplicaConversation(v6: v6)
        c.handshake(h)
        let offset = c.secondaryISN &- c.primaryISN
        // The client's handshake ACK as the secondary must see it.
        let lastToSecondary = try #require(h.secondary.last)
        let handshakeAck = try #require(parsed(lastToSecondary))
        #expect(handshakeAck.ack == c.secondaryISN &+ 1)
        #expect(handshakeAck.checksumValid)
        #expect(h.primary.last.flatMap { parsed($0)?.ack } == c.primaryISN &+ 1, "the primary's copy is untouched")

        for round in 0..<20 {
            let data = bytes(100 + round, seed: UInt8(round))
            h.fromPrimary(c.primary([.ack, .psh], data))
            let fromSecondary = Self.rewrittenFromSecondary(h, c.secondary([.ack, .psh], data))
            let seen = try #require(parsed(fromSecondary))
            #expect(seen.seq == c.primaryNext &- UInt32(data.count), "seq -= offset, round \(round)")
            #expect(seen.ack == c.clientNext, "the secondary's ack is in the client's space: unchanged")
            #expect(seen.checksumValid)
            // The client acks with a SACK block over the primary's bytes.
            let left = c.primaryNext &- 50
            h.fromClient(c.client([.ack], [UInt8(round)], options: [.noOperation, .noOperation,
                .sack([SACKEdge(left: left, right: c.primaryNext)])]))
            let last = try #require(h.secondary.last)
            let toSecondary = try #require(parsed(last))
            #expect(toSecondary.ack == c.primaryNext &+ offset, "ack += offset, round \(round)")
            #expect(toSecondary.sack == [SACKEdge(left: left &+ offset, right: c.primaryNext &+ offset)])
            #expect(toSecondary.checksumValid)
        }
        #expect(h.events.isEmpty)
    }

    @Test("The offset is learned from the client's ACK alone when the primary's SYN|ACK is not seen")
    func learnedFromClientAck() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        h.fromClient(c.client(.syn))
        _ = c.primary([.syn, .ack])  // the primary answers, but its SYN|ACK never reaches the proxy
        h.fromSecondary(c.secondary([.syn, .ack]))
        h.fromClient(c.client(.ack))
        #expect(h.secondary.last.flatMap { parsed($0)?.ack } == c.secondaryISN &+ 1)
        #expect(h.pipeline.rewriter.counters.learned == 1)
    }

    @Test("A connection the guest opens gets an offset from the two replicas' SYNs")
    func guestInitiated() throws {
        let h = PipelineHarness()
        // The replicas are the TCP clients here; "client" is the remote server side.
        var c = ReplicaConversation()
        c.primaryISN = 123
        c.primaryNext = 123
        c.secondaryISN = 99_999
        c.secondaryNext = 99_999
        h.fromPrimary(c.primary(.syn))
        let synFromSecondary = Self.rewrittenFromSecondary(h, c.secondary(.syn))
        #expect(parsed(synFromSecondary)?.seq == 123, "the secondary's SYN leaves in the primary's space")
        h.fromClient(c.client([.syn, .ack]))  // the remote server's SYN|ACK acks primary ISN + 1
        let last = try #require(h.secondary.last)
        let toSecondary = try #require(parsed(last))
        #expect(toSecondary.ack == 100_000, "ack += offset: the secondary's ISN + 1")
        #expect(toSecondary.checksumValid)
    }

    @Test("After a checkpoint every offset is zero")
    func checkpointReset() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.handshake(h)
        h.pipeline.checkpointDone(now: h.now)
        h.collect()
        c.secondaryNext = c.primaryNext  // the secondary is now a copy of the primary
        let sent = c.secondaryNext
        let frame = Self.rewrittenFromSecondary(h, c.secondary([.ack], [1]))
        #expect(parsed(frame)?.seq == sent, "seq left as the secondary sent it")
        h.fromClient(c.client(.ack))
        #expect(h.secondary.last.flatMap { parsed($0)?.ack } == c.primaryNext, "no offset added after the checkpoint")
    }

    @Test("After failover tracked connections keep their offsets; new ones are not touched")
    func failover() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.handshake(h)
        h.pipeline.failover(now: h.now)
        h.collect()
        h.fromSecondary(c.secondary([.ack, .psh], [1, 2, 3]))
        #expect(h.client.last.flatMap { parsed($0)?.seq } == c.primaryNext, "rewritten into the primary's space")
        // The client's packets now go to the secondary only, acks shifted into its space.
        let primaryBefore = h.primary.count
        h.fromClient(c.client(.ack))
        #expect(h.primary.count == primaryBefore, "nothing goes to the dead primary")
        #expect(h.secondary.last.flatMap { parsed($0)?.ack } == c.primaryNext &+ (c.secondaryISN &- c.primaryISN))
        var fresh = ReplicaConversation()
        fresh.clientPort = 40001
        fresh.primaryISN = fresh.secondaryISN  // after failover only the secondary answers
        fresh.primaryNext = fresh.secondaryNext
        h.fromClient(fresh.client(.syn))
        h.fromSecondary(fresh.secondary([.syn, .ack]))
        h.fromSecondary(fresh.secondary([.ack, .psh], [9]))
        #expect(h.client.last.flatMap { parsed($0)?.seq } == fresh.secondaryNext &- 1, "new connection untouched")
    }
}
