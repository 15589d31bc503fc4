import ColoFragments
import ColoPacket
import ColoPacketBuilder
import Testing

@Suite("Reassembling whole datagrams")
struct ReassemblyTests {
    @Test("IPv4 UDP of 3000 bytes split at 1480, in order, equals the unfragmented original")
    func ipv4InOrder() throws {
        let original = udp4()
        let fragments = PacketBuilder.fragmentIPv4(original, maxPayload: 1480)
        #expect(fragments.map(\.count) == [1500, 1500, 40])
        let reassembler = FragmentReassembler()
        let outcomes = try reassembler.offerAll(fragments)
        #expect(outcomes[0] == .held && outcomes[1] == .held, "non-final fragments are held")
        let done = try #require(outcomes[2].completed, "the last fragment completes the datagram")
        #expect(done.bytes == original, "reassembled bytes equal the original datagram")
        #expect(done.checksum == .valid, "the UDP checksum over the reassembled datagram validates")
        #expect(done.ipv4HeaderChecksumValid)
        #expect(done.layout.isUDP && !done.layout.isFragment && done.layout.networkEnd == 3000)
        #expect(done.tokens == [0, 1, 2])
        #expect(done.mru == 1500, "MRU is the largest fragment, IP header included")
        let c = reassembler.counters
        #expect(c.accepted == 3 && c.completed == 1 && c.currentDatagrams == 0 && c.currentBytes == 0)
    }

    @Test("IPv4 fragments in every order reassemble; tokens come in arrival order")
    func ipv4EveryOrder() throws {
        let original = udp4()
        let fragments = PacketBuilder.fragmentIPv4(original, maxPayload: 1480)
        let reassembler = FragmentReassembler()
        for order in [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] {
            let outcomes = try reassembler.offerAll(fragments, order: order)
            #expect(outcomes.dropLast().allSatisfy { $0 == .held }, "order \(order): held until the last")
            let done = try #require(outcomes.last?.completed, "order \(order) completes")
            #expect(done.bytes == original, "order \(order): bytes equal the original")
            #expect(done.checksum == .valid)
            #expect(done.tokens == order.map(UInt64.init), "order \(order): tokens in arrival order")
        }
        #expect(reassembler.counters.completed == 6 && reassembler.counters.currentDatagrams == 0)
    }

    @Test("IPv4 with header options: the first fragment's header, options included, is kept")
    func ipv4WithOptions() throws {
        let original = udp4(totalLength: 2000, options: [0x94, 0x04, 0x00, 0x00])  // router alert
        let fragments = split4(original, at: [976])
        let outcomes = try FragmentReassembler().offerAll(fragments, order: [1, 0])
        let done = try #require(outcomes[1].completed)
        #expect(done.bytes == original)
        #expect(done.layout.ipHeaderLength == 24)
        #expect(done.checksum == .valid && done.ipv4HeaderChecksumValid)
    }

    @Test("Fragments inside VLAN-tagged Ethernet frames: the datagram comes back as raw IP")
    func ipv4InEthernet() throws {
        let original = udp4()
        let eth = EthernetSpec(vlanTags: [VLANTag(tpid: 0x8100, tci: 42)])
        let frames = PacketBuilder.fragmentIPv4(original, maxPayload: 1480).map {
            PacketBuilder.build(.other(etherType: EtherType.ipv4, bytes: $0), ethernet: eth)
        }
        let outcomes = try FragmentReassembler().offerAll(frames, order: [2, 1, 0], linkType: .ethernet)
        let done = try #require(outcomes[2].completed)
        #expect(done.bytes == original)
        #expect(done.mru == 1500, "MRU counts the IP datagram, not the Ethernet frame")
    }

    @Test("IPv6 with hop-by-hop and destination options before the fragment header, in order and reversed")
    func ipv6WithExtensionHeaders() throws {
        let original = udp6(
            payloadSize: 3000,
            extensions: [.hopByHop([0x05, 0x02, 0x00, 0x00]), .destinationOptions([0x1E, 0x04, 1, 2, 3, 4])])
        let fragments = split6(original, maxData: 1232)
        #expect(fragments.count == 3)
        let reassembler = FragmentReassembler()
        for order in [[0, 1, 2], [2, 1, 0]] {
            let outcomes = try reassembler.offerAll(fragments, order: order)
            let done = try #require(outcomes[2].completed, "order \(order) completes")
            #expect(done.bytes == original, "fragment header removed, next header chained, payload length fixed")
            #expect(done.checksum == .valid)
            #expect(done.layout.isUDP && done.layout.extensionHeaderCount == 2 && done.layout.fragmentHeaderOffset == 0)
            #expect(done.tokens == order.map(UInt64.init))
            #expect(done.mru == fragments[0].count)
        }
    }

    @Test("IPv6 header chain longer than the header room, first fragment last")
    func ipv6LongHeaderChainFirstLast() throws {
        let original = udp6(
            payloadSize: 2500,
            extensions: [.hopByHop([0x1E, 58] + pattern(58)), .destinationOptions([0x1E, 0x04, 1, 2, 3, 4])])
        #expect(unfragmentablePart(original).length == 112)
        let fragments = split6(original, maxData: 1024)
        let outcomes = try FragmentReassembler().offerAll(fragments, order: [2, 1, 0])
        let done = try #require(outcomes[2].completed)
        #expect(done.bytes == original, "data already held moves to make room for the long header")
        #expect(done.checksum == .valid)
    }

    @Test("IPv6 without extension headers, from the builder's fragmenter")
    func ipv6Plain() throws {
        let original = udp6(payloadSize: 4000)
        let fragments = PacketBuilder.fragmentIPv6(original, maxPayload: 1448, identification: 7)
        let outcomes = try FragmentReassembler().offerAll(fragments, order: [1, 2, 0])
        let done = try #require(outcomes[2].completed)
        #expect(done.bytes == original && done.checksum == .valid)
    }

    @Test("Whole packets and IPv6 atomic fragments pass through untouched")
    func notFragments() throws {
        let reassembler = FragmentReassembler()
        #expect(try reassembler.offer(udp4(totalLength: 100), token: 1) == .notAFragment)
        var ip = IPv6Spec()
        ip.extensionHeaders = [.fragment(offset: 0, more: false, identification: 9)]
        let atomic = PacketBuilder.ipv6(ip, .udp(UDPSpec(payload: pattern(20))))
        #expect(try reassembler.offer(atomic, token: 2) == .notAFragment, "RFC 6946: atomic fragments stand alone")
        #expect(reassembler.counters == FragmentCounters())
    }

    @Test("Two zones with identical fragments are kept apart")
    func zonesKeptApart() throws {
        let original = udp4()
        let fragments = PacketBuilder.fragmentIPv4(original, maxPayload: 1480)
        let reassembler = FragmentReassembler()
        var results: [UInt16: Completed] = [:]
        for (index, fragment) in fragments.enumerated() {
            for zone: UInt16 in [1, 2] {
                let token = UInt64(zone) * 100 + UInt64(index)
                let outcome = try reassembler.offer(fragment, zone: zone, token: token)
                if let done = outcome.completed { results[zone] = done } else { #expect(outcome == .held) }
            }
        }
        #expect(results[1]?.tokens == [100, 101, 102] && results[1]?.zone == 1)
        #expect(results[2]?.tokens == [200, 201, 202] && results[2]?.zone == 2)
        #expect(results[1]?.bytes == original && results[2]?.bytes == original)
        #expect(reassembler.counters.overlap == 0, "the same fragments in two zones are not duplicates")
    }

    @Test("MRU is the largest original fragment whatever the order")
    func mruReported() throws {
        let original = udp4(totalLength: 4020)
        let fragments = split4(original, at: [1200, 2680])  // 1220, 1500 and 1340 bytes on the wire
        #expect(fragments.map(\.count) == [1220, 1500, 1340])
        let outcomes = try FragmentReassembler().offerAll(fragments, order: [2, 0, 1])
        let done = try #require(outcomes[2].completed)
        #expect(done.mru == 1500)
        #expect(done.bytes == original)
    }
}
