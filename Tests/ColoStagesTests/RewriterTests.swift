import ColoConntrack
import ColoPacket
import ColoPacketBuilder
import ColoStages
import Testing

@Suite("filter-rewriter")
struct RewriterTests {
    /// Stores a secondary packet, tracks it in the secondary's zone and rewrites it, returning the result.
    static func rewrittenFromSecondary(_ h: PipelineHarness, _ frame: [UInt8]) -> [UInt8] {
        guard
            let ref = frame.withUnsafeBytes({
                h.store.store($0, linkType: .ethernet, source: .secondary, receivedAt: h.now)
            })
        else { return [] }
        h.store.metadata(ref).pointee.track = h.pipeline.tracker.track(
            h.store.packet(ref), zone: ColoPipeline.secondaryZone, now: h.now)
        h.pipeline.rewriter.rewriteFromSecondary(ref, in: h.store)
        defer { h.store.release(ref) }
        return Array(h.store.frame(ref))
    }

    @Test(
        "Client-initiated, IPv4 and IPv6: every later segment carries the right seq/ack/SACK edges and checksum",
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
            h.fromClient(
                c.client(
                    [.ack], [UInt8(round)],
                    options: [
                        .noOperation, .noOperation,
                        .sack([SACKEdge(left: left, right: c.primaryNext)]),
                    ]))
            let last = try #require(h.secondary.last)
            let toSecondary = try #require(parsed(last))
            #expect(toSecondary.ack == c.primaryNext &+ offset, "ack += offset, round \(round)")
            #expect(toSecondary.sack == [SACKEdge(left: left &+ offset, right: c.primaryNext &+ offset)])
            #expect(toSecondary.checksumValid)
        }
        #expect(h.events.isEmpty)
    }

    @Test(
        "Partial-checksum segments (TAP offloads): seq/ack/SACK rewritten, checksum field left as sent, header kept",
        arguments: [false, true])
    func partialChecksum(v6: Bool) throws {
        let h = PipelineHarness()
        var c = ReplicaConversation(v6: v6)
        c.handshake(h)
        let offset = c.secondaryISN &- c.primaryISN
        var header = VirtioNetHeader()
        header.flags = VirtioNetHeader.needsChecksumFlag
        header.gsoType = v6 ? 4 : 1
        header.gsoSize = 1448
        func checksumField(_ frame: [UInt8]) throws -> [UInt8] {
            let t = try #require(parsed(frame)).layout.transportOffset
            return Array(frame[(t + 16)..<(t + 18)])
        }

        // A 3000-byte segment from the secondary (one 64 KiB-style frame, larger than an MTU): seq -= offset.
        let data = bytes(3000, seed: 5)
        h.fromPrimary(c.primary([.ack, .psh], data))
        let sent = c.secondary([.ack, .psh], data)
        let ref = try #require(
            sent.withUnsafeBytes {
                h.store.store($0, linkType: .ethernet, source: .secondary, receivedAt: h.now)
            })
        h.store.metadata(ref).pointee.offload = header
        h.store.metadata(ref).pointee.track = h.pipeline.tracker.track(
            h.store.packet(ref), zone: ColoPipeline.secondaryZone, now: h.now)
        h.pipeline.rewriter.rewriteFromSecondary(ref, in: h.store)
        let out = Array(h.store.frame(ref))
        h.store.release(ref)
        #expect(parsed(out)?.seq == c.primaryNext &- 3000, "seq -= offset")
        #expect(try checksumField(out) == checksumField(sent), "the pseudo-header sum stays for the final sender")

        // A client ACK with a SACK block: the mirror copy gets ack += offset and the same header.
        let left = c.primaryNext &- 1000
        let ack = c.client(
            [.ack], [], options: [.noOperation, .noOperation, .sack([SACKEdge(left: left, right: c.primaryNext)])])
        let clientRef = try #require(
            ack.withUnsafeBytes {
                h.store.store($0, linkType: .ethernet, source: .client, receivedAt: h.now)
            })
        h.store.metadata(clientRef).pointee.offload = header
        h.pipeline.fromClient(clientRef, now: h.now)
        let copy = try #require(h.pipeline.toSecondary.last)
        #expect(h.store.metadata(copy).pointee.offload == header, "the virtio-net header travels with the copy")
        h.collect()
        let toSecondary = try #require(h.secondary.last)
        #expect(parsed(toSecondary)?.ack == c.primaryNext &+ offset)
        #expect(parsed(toSecondary)?.sack == [SACKEdge(left: left &+ offset, right: c.primaryNext &+ offset)])
        #expect(try checksumField(toSecondary) == checksumField(ack))
        #expect(h.primary.last == ack, "the primary's copy is untouched")

        // The same ACK without offloads: the checksum is updated (and valid).
        h.fromClient(ack)
        let complete = try #require(h.secondary.last)
        #expect(try checksumField(complete) != checksumField(ack))
        #expect(parsed(complete)?.checksumValid == true)
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
