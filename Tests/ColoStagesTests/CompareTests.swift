import ColoConntrack
import ColoPacket
import ColoPacketBuilder
import ColoStages
import Testing

@Suite("colo-compare")
struct CompareTests {
    /// Payloads the client received, concatenated in release order.
    static func clientStream(_ h: PipelineHarness) -> [UInt8] {
        h.client.compactMap { parsed($0)?.payload }.flatMap { $0 }
    }

    @Test("Identical streams: every primary segment released, in order, no divergence")
    func identical() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.handshake(h)
        let body = bytes(5000)
        for start in stride(from: 0, to: body.count, by: 1000) {
            let chunk = Array(body[start..<min(start + 1000, body.count)])
            h.fromPrimary(c.primary([.ack, .psh], chunk))
            h.fromSecondary(c.secondary([.ack, .psh], chunk))
        }
        #expect(h.events.isEmpty)
        #expect(Self.clientStream(h) == body, "the client gets the primary's bytes, all of them, in order")
        #expect(h.client.count == 1 + 5, "SYN|ACK and five data segments")
        #expect(h.pipeline.comparer.counters.bytesCompared == 5000)
        #expect(h.store.inUse == 0, "every secondary packet dropped, every released one collected")
    }

    @Test("The same byte stream cut into different segment sizes on each side")
    func differentSegmentation() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.handshake(h)
        let body = bytes(4000, seed: 7)
        for size in [1448, 1448, 1104] {
            let start = Int(c.primaryNext &- c.primaryISN &- 1)
            h.fromPrimary(c.primary([.ack], Array(body[start..<(start + size)])))
        }
        #expect(h.client.count == 1, "nothing released before the secondary has the bytes")
        for size in [100, 1900, 500, 1500] {
            let start = Int(c.secondaryNext &- c.secondaryISN &- 1)
            h.fromSecondary(c.secondary([.ack], Array(body[start..<(start + size)])))
        }
        #expect(h.events.isEmpty)
        #expect(Self.clientStream(h) == body)
        #expect(h.client.dropFirst().map { parsed($0)?.payload.count } == [1448, 1448, 1104], "the primary's segments")
    }

    @Test("Interleaved retransmissions on both sides are released or dropped without comparison")
    func retransmissions() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.handshake(h)
        let first = bytes(1000)
        let second = bytes(1000, seed: 9)
        var p = c
        h.fromPrimary(c.primary([.ack], first))
        h.fromSecondary(c.secondary([.ack], first))
        h.fromPrimary(p.primary([.ack], first))  // retransmission of verified bytes
        h.fromPrimary(c.primary([.ack], second))
        var s = c
        s.secondaryNext = c.secondaryISN &+ 1
        h.fromSecondary(s.secondary([.ack], first))  // secondary retransmits too
        h.fromSecondary(c.secondary([.ack], second))
        #expect(h.events.isEmpty)
        #expect(Self.clientStream(h) == first + first + second)
        #expect(h.pipeline.comparer.counters.retransmissions == 2)
    }

    @Test("Pure ACKs wait for the secondary's first output on the connection")
    func pureAcks() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        h.fromClient(c.client(.syn))
        h.fromPrimary(c.primary([.syn, .ack]))
        #expect(h.client.isEmpty, "the SYN|ACK waits for the secondary")
        h.fromPrimary(c.primary(.ack))
        #expect(h.client.isEmpty)
        h.fromSecondary(c.secondary([.syn, .ack]))
        #expect(h.client.count == 2, "both released once the secondary answered")
    }

    @Test("A payload difference at a known byte: one event with its stream offset; the client gets the primary's bytes")
    func payloadDivergence() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.handshake(h)
        let body = bytes(3000)
        var other = body
        other[2345] ^= 0xFF
        h.fromPrimary(c.primary([.ack], Array(body[0..<1500])))
        h.fromPrimary(c.primary([.ack], Array(body[1500...])))
        h.fromSecondary(c.secondary([.ack], Array(other[0..<2000])))
        h.fromSecondary(c.secondary([.ack], Array(other[2000...])))
        #expect(h.events.count == 1)
        let event = h.events.first
        #expect(event?.reason == .payload)
        #expect(event?.streamOffset == 2345)
        #expect(event?.action == .release)
        #expect(event?.source == "10.10.0.2" && event?.sourcePort == 80 && event?.destinationPort == 40000)
        #expect(event?.primary?.seq == c.primaryISN &+ 1 &+ 1500)
        #expect(Self.clientStream(h) == body, "release policy: the primary's bytes go out")
        let json = event?.json ?? ""
        #expect(json.contains("\"reason\":\"payload\"") && json.contains("\"stream_offset\":2345"))
        #expect(json.contains("\"flow\":{\"src\":\"10.10.0.2\",\"sport\":80,\"dst\":\"10.10.0.1\",\"dport\":40000}"))
    }

    @Test("One side RST, the other data: a protocol divergence")
    func resetAgainstData() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.handshake(h)
        h.fromPrimary(c.primary([.ack], bytes(500)))
        h.fromSecondary(c.secondary([.rst, .ack]))
        #expect(h.events.map(\.reason) == [.protocol])
    }

    @Test("UDP: equal datagrams released, unequal ones time out")
    func udp() {
        let h = PipelineHarness()
        func datagram(_ payload: [UInt8], from: IPv4Address = IPv4Address(10, 10, 0, 2)) -> [UInt8] {
            PacketBuilder.build(
                .ipv4(
                    IPv4Spec(source: from, destination: IPv4Address(10, 10, 0, 1)),
                    .udp(UDPSpec(sourcePort: 53, destinationPort: 5000, payload: payload))))
        }
        h.fromPrimary(datagram([1, 2, 3]))
        h.fromSecondary(datagram([1, 2, 3]))
        #expect(h.client.count == 1 && h.events.isEmpty)
        h.fromSecondary(datagram([4, 5]))  // the secondary first this time
        h.fromPrimary(datagram([4, 5]))
        #expect(h.client.count == 2)
        h.fromPrimary(datagram([9, 9, 9]))
        h.fromSecondary(datagram([9, 9, 8]))
        #expect(h.client.count == 2, "no equal datagram: held")
        h.advance(3_000 * ms)
        #expect(h.events.map(\.reason) == [.secondaryTimeout])
        #expect(h.client.count == 3, "released after the divergence (release policy)")
    }

    @Test("ICMP echo replies compared")
    func icmpEcho() {
        let h = PipelineHarness()
        let reply = PacketBuilder.build(
            .ipv4(
                IPv4Spec(source: IPv4Address(10, 10, 0, 2), destination: IPv4Address(10, 10, 0, 1)),
                .icmp(.echo(type: 0, identifier: 7, sequence: 1, payload: bytes(56)))))
        h.fromPrimary(reply)
        #expect(h.client.isEmpty)
        h.fromSecondary(reply)
        #expect(h.client == [reply] && h.events.isEmpty)
    }

    @Test("ARP compared as whole frames after the MAC addresses")
    func arp() {
        let h = PipelineHarness()
        let reply = PacketBuilder.build(
            .arp(
                ARPSpec(
                    operation: 2, senderMAC: MACAddress(0x52, 0x54, 0, 0, 0, 2),
                    senderIP: IPv4Address(10, 10, 0, 2), targetMAC: MACAddress(0x52, 0x54, 0, 0, 0, 1),
                    targetIP: IPv4Address(10, 10, 0, 1))))
        h.fromPrimary(reply)
        h.fromSecondary(reply)
        #expect(h.client == [reply] && h.events.isEmpty)
    }

    @Test("IPv6 TCP and VLAN-tagged TCP are compared like IPv4")
    func ipv6AndVLAN() {
        for conversation in [ReplicaConversation(v6: true), ReplicaConversation(vlan: 100)] {
            let h = PipelineHarness()
            var c = conversation
            c.handshake(h)
            let body = bytes(2000)
            var changed = body
            changed[1999] ^= 1
            h.fromPrimary(c.primary([.ack], body))
            h.fromSecondary(c.secondary([.ack], changed))
            #expect(h.events.first?.streamOffset == 1999, "v6 \(c.v6) vlan \(String(describing: c.vlan))")
            #expect(h.events.first?.family == (c.v6 ? "ipv6" : "ipv4"))
        }
    }

    @Test("A fragmented UDP datagram is compared after reassembly; its fragments are released")
    func fragmentedUDP() {
        let h = PipelineHarness()
        func fragments(id: UInt16) -> [[UInt8]] {
            var ip = IPv4Spec(source: IPv4Address(10, 10, 0, 2), destination: IPv4Address(10, 10, 0, 1))
            ip.dontFragment = false
            ip.identification = id
            let datagram = PacketBuilder.ipv4(
                ip, .udp(UDPSpec(sourcePort: 53, destinationPort: 5000, payload: bytes(3000))))
            return PacketBuilder.fragmentIPv4(datagram, maxPayload: 1480).map {
                PacketBuilder.build(.other(etherType: EtherType.ipv4, bytes: $0))
            }
        }
        let primary = fragments(id: 0x1111)
        let secondary = fragments(id: 0x2222)  // the replicas pick different IP ids
        for frame in primary { h.fromPrimary(frame) }
        #expect(h.client.isEmpty)
        for frame in secondary.reversed() { h.fromSecondary(frame) }
        #expect(h.events.isEmpty)
        #expect(h.client == primary, "the primary's original fragments, in order")
        #expect(h.store.inUse == 0)
    }

    @Test("A silent secondary: a timeout event after compare_timeout, not before")
    func silentSecondary() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.handshake(h)
        h.fromPrimary(c.primary([.ack], bytes(100)))
        h.advance(2_000 * ms)
        #expect(h.events.isEmpty)
        h.advance(1_000 * ms)
        #expect(h.events.map(\.reason) == [.secondaryTimeout])
        #expect(Self.clientStream(h) == bytes(100))
    }

    @Test("Queue overflow is a divergence, and nothing is dropped silently")
    func queueOverflow() {
        let h = PipelineHarness { $0.maxQueueSize = 4 }
        var c = ReplicaConversation()
        c.handshake(h)
        for _ in 0..<5 { h.fromPrimary(c.primary([.ack], bytes(10))) }
        #expect(h.events.map(\.reason) == [.queueOverflow])
        #expect(Self.clientStream(h).count == 50, "all five released under the release policy")
    }

    @Test("Checkpoint policy: held until checkpoint-done, then primary released, secondary dropped, offsets zero")
    func checkpoint() {
        let h = PipelineHarness { $0.onDivergence = .checkpoint }
        var c = ReplicaConversation()
        c.handshake(h)
        h.fromPrimary(c.primary([.ack], [1, 2, 3]))
        h.fromSecondary(c.secondary([.ack], [1, 2, 4]))
        #expect(h.events.map(\.action) == [.checkpoint])
        #expect(h.pipeline.comparer.checkpointRequested)
        let before = h.client.count
        h.fromPrimary(c.primary([.ack], [5]))
        #expect(h.client.count == before, "held while the checkpoint is pending")
        h.pipeline.checkpointDone(now: h.now)
        h.collect()
        #expect(Self.clientStream(h) == [1, 2, 3, 5])
        #expect(h.store.inUse == 0)
        // After the checkpoint the secondary is a copy of the primary: same sequence numbers, offset zero.
        let key = FlowKey(
            sourceLow: UInt64(IPv4Address(10, 10, 0, 2).value), destinationLow: UInt64(IPv4Address(10, 10, 0, 1).value),
            sourcePort: 80, destinationPort: 40000, zone: 0, protocolNumber: 6, family: 4)
        let offset = h.pipeline.rewriter.offset(of: key)
        #expect(offset == 0)
        c.secondaryNext = c.primaryNext
        h.fromPrimary(c.primary([.ack], [6, 7]))
        h.fromSecondary(c.secondary([.ack], [6, 7]))
        #expect(Self.clientStream(h) == [1, 2, 3, 5, 6, 7] && h.events.count == 1)
    }

    @Test("Failover: the secondary's output, rewritten, goes to the client")
    func failover() {
        let h = PipelineHarness()
        var c = ReplicaConversation()
        c.handshake(h)
        h.fromPrimary(c.primary([.ack], bytes(100)))
        h.fromSecondary(c.secondary([.ack], bytes(100)))
        h.fromPrimary(c.primary([.ack], bytes(50, seed: 3)))  // the primary dies with this unconfirmed
        h.pipeline.failover(now: h.now)
        h.collect()
        h.fromSecondary(c.secondary([.ack], bytes(50, seed: 3)))
        h.fromSecondary(c.secondary([.ack], bytes(20, seed: 4)))
        let last = h.client.suffix(2).compactMap { parsed($0) }
        #expect(last.map(\.seq) == [c.primaryISN &+ 101, c.primaryISN &+ 151], "in the primary's sequence space")
        #expect(last.allSatisfy { $0.checksumValid })
        #expect(Self.clientStream(h) == bytes(100) + bytes(50, seed: 3) + bytes(20, seed: 4))
    }
}
