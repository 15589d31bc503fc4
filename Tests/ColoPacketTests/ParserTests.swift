import ColoPacket
import ColoPacketBuilder
import Testing

@Suite("Parsing built packets")
struct ParserTests {
    @Test("Ethernet + IPv4 + TCP with every option kind")
    func tcp4WithOptions() throws {
        let options: [TCPOptionSpec] = [
            .maximumSegmentSize(1460), .sackPermitted, .timestamp(value: 0x0102_0304, echoReply: 0x0506_0708),
            .noOperation, .windowScale(7),
        ]
        let frame = PacketBuilder.tcp4(
            TCPSpec(sequenceNumber: 0xFFFF_FFF0, acknowledgmentNumber: 0, flags: .syn, options: options))
        try withParsed(frame) { p in
            #expect(p.layout.network == .ipv4)
            #expect(p.layout.networkOffset == 14)
            #expect(p.ethernet?.source == clientMAC)
            #expect(p.ethernet?.destination == replicaMAC)
            let ip = try #require(p.ipv4)
            #expect(ip.source == client4 && ip.destination == replica4)
            #expect(ip.ttl == 64 && ip.dontFragment && !ip.moreFragments && ip.identification == 0x1234)
            #expect(ip.isHeaderChecksumValid)
            let tcp = try #require(p.tcp)
            #expect(tcp.sourcePort == 40000 && tcp.destinationPort == 80)
            #expect(tcp.sequenceNumber == 0xFFFF_FFF0)
            #expect(tcp.flags == .syn)
            #expect(tcp.headerLength == 40)
            #expect(tcp.maximumSegmentSize == 1460)
            #expect(tcp.windowScale == 7)
            #expect(tcp.sackPermitted)
            #expect(tcp.timestamp?.value == 0x0102_0304 && tcp.timestamp?.echoReply == 0x0506_0708)
            #expect(tcp.sequenceLength == 1, "a SYN occupies one sequence number")
            #expect(p.transportChecksumStatus == .valid)
            #expect(p.payload.isEmpty)
        }
    }

    @Test("TCP payload, SACK blocks and sequence length")
    func tcpPayloadAndSACK() throws {
        let payload = Array("GET / HTTP/1.1\r\n\r\n".utf8)
        let frame = PacketBuilder.tcp4(
            TCPSpec(
                sequenceNumber: 100, acknowledgmentNumber: 200, flags: [.psh, .ack, .fin],
                options: [
                    .noOperation, .noOperation,
                    .sack([SACKEdge(left: 1000, right: 2000), SACKEdge(left: 3000, right: 4000)]),
                ], payload: payload))
        try withParsed(frame) { p in
            let tcp = try #require(p.tcp)
            let blocks = try #require(tcp.sackBlocks)
            #expect(blocks.count == 2)
            #expect(blocks[0].left == 1000 && blocks[0].right == 2000)
            #expect(blocks[1].left == 3000 && blocks[1].right == 4000)
            #expect(Array(tcp.payload) == payload)
            #expect(Array(p.payload) == payload)
            #expect(tcp.sequenceLength == UInt32(payload.count + 1), "payload plus FIN")
            #expect(p.transportChecksumStatus == .valid)
        }
    }

    @Test("Ethernet padding after a short IPv4 datagram is not payload")
    func ethernetPadding() throws {
        var frame = PacketBuilder.tcp4(TCPSpec(flags: .ack))
        frame += [UInt8](repeating: 0, count: 6)  // 54-byte frame padded to 60
        try withParsed(frame) { p in
            #expect(p.layout.networkEnd == 54)
            #expect(p.payload.isEmpty)
            #expect(p.transportChecksumStatus == .valid)
        }
    }

    @Test("IPv4 options are skipped and kept")
    func ipv4Options() throws {
        var ip = IPv4Spec()
        ip.options = [7, 7, 4, 0, 0, 0, 0, 1]  // record route with one slot, then NOP
        let frame = PacketBuilder.build(.ipv4(ip, .udp(UDPSpec(payload: [1, 2, 3]))))
        try withParsed(frame) { p in
            let header = try #require(p.ipv4)
            #expect(header.headerLength == 28)
            #expect(Array(header.options) == [7, 7, 4, 0, 0, 0, 0, 1])
            #expect(p.udp?.payload.count == 3)
            #expect(p.transportChecksumStatus == .valid)
            #expect(header.isHeaderChecksumValid)
        }
    }

    @Test("802.1Q and 802.1ad tags")
    func vlanTags() throws {
        let single = PacketBuilder.tcp4(
            TCPSpec(flags: .ack, payload: [9]), ethernet: EthernetSpec(vlanTags: [VLANTag(tpid: 0x8100, tci: 0x2064)]))
        try withParsed(single) { p in
            #expect(p.layout.vlanCount == 1)
            #expect(p.layout.outerVLAN.vlanID == 100 && p.layout.outerVLAN.priority == 1)
            #expect(p.layout.networkOffset == 18)
            #expect(p.tcp?.payload.first == 9)
        }
        let double = PacketBuilder.build(
            .ipv6(IPv6Spec(), .udp(UDPSpec(payload: [1]))),
            ethernet: EthernetSpec(vlanTags: [VLANTag(tpid: 0x88A8, tci: 10), VLANTag(tpid: 0x8100, tci: 20)]))
        try withParsed(double) { p in
            #expect(p.layout.vlanCount == 2)
            #expect(p.layout.outerVLAN == VLANTag(tpid: 0x88A8, tci: 10))
            #expect(p.layout.innerVLAN == VLANTag(tpid: 0x8100, tci: 20))
            #expect(p.layout.etherType == EtherType.ipv6)
            #expect(p.layout.networkOffset == 22)
            #expect(p.transportChecksumStatus == .valid)
        }
    }

    @Test("ARP request and reply")
    func arp() throws {
        let request = PacketBuilder.build(.arp(ARPSpec()), ethernet: EthernetSpec(destination: .broadcast))
        try withParsed(request) { p in
            let arp = try #require(p.arp)
            #expect(arp.operation == 1 && arp.isEthernetIPv4)
            #expect(arp.senderMAC == clientMAC && arp.senderIPv4 == client4)
            #expect(arp.targetIPv4 == replica4 && arp.targetMAC == .zero)
            #expect(p.layout.networkEnd == 14 + 28)
            #expect(p.ethernet?.destination == .broadcast)
        }
    }

    @Test("IPv6 + TCP with an extension chain: hop-by-hop, destination options, routing, AH")
    func ipv6ExtensionChain() throws {
        var ip = IPv6Spec()
        ip.extensionHeaders = [
            .hopByHop([5, 2, 0, 0]),  // router alert
            .destinationOptions([]),
            .routing(type: 4, segmentsLeft: 0, data: [0, 0, 0, 0] + [UInt8](repeating: 0xAB, count: 16)),
            .authentication(spi: 0x100, sequence: 1, icv: [UInt8](repeating: 0xCD, count: 12)),
        ]
        ip.flowLabel = 0xABCDE
        ip.trafficClass = 0x28
        let frame = PacketBuilder.build(.ipv6(ip, .tcp(TCPSpec(flags: [.ack, .psh], payload: [1, 2, 3, 4]))))
        try withParsed(frame) { p in
            #expect(p.layout.network == .ipv6)
            #expect(p.layout.extensionHeaderCount == 4)
            let header = try #require(p.ipv6)
            #expect(header.flowLabel == 0xABCDE && header.trafficClass == 0x28)
            #expect(header.source == client6 && header.destination == replica6)
            let kinds = header.extensionHeaders(headerLength: p.layout.ipHeaderLength).map(\.kind)
            #expect(kinds == [0, 60, 43, 51])
            #expect(p.layout.transportProtocol == IPProtocol.tcp)
            #expect(Array(try #require(p.tcp).payload) == [1, 2, 3, 4])
            #expect(p.transportChecksumStatus == .valid)
        }
    }

    @Test("UDP over IPv4 and IPv6, with and without checksum")
    func udp() throws {
        let v4 = PacketBuilder.build(
            .ipv4(IPv4Spec(), .udp(UDPSpec(sourcePort: 1, destinationPort: 2, payload: [7, 7]))))
        try withParsed(v4) { p in
            let udp = try #require(p.udp)
            #expect(udp.sourcePort == 1 && udp.destinationPort == 2 && udp.length == 10)
            #expect(p.transportChecksumStatus == .valid)
        }
        var none = UDPSpec(payload: [1])
        none.omitChecksum = true
        try withParsed(PacketBuilder.build(.ipv4(IPv4Spec(), .udp(none)))) { p in
            #expect(p.transportChecksumStatus == .absent)
        }
        try withParsed(PacketBuilder.build(.ipv6(IPv6Spec(), .udp(none)))) { p in
            guard case .invalid = p.transportChecksumStatus else {
                Issue.record("UDP over IPv6 must carry a checksum (RFC 8200 §8.1)")
                return
            }
        }
        var bad = UDPSpec(payload: [1, 2, 3])
        bad.corruptChecksum = true
        try withParsed(PacketBuilder.build(.ipv6(IPv6Spec(), .udp(bad)))) { p in
            guard case .invalid = p.transportChecksumStatus else {
                Issue.record("a corrupted checksum must be reported invalid")
                return
            }
        }
    }

    @Test("Raw IP links: the same API on L3 packets")
    func rawIP() throws {
        let packet = PacketBuilder.tcp4(TCPSpec(flags: .ack, payload: [1]), ethernet: nil)
        for link in [LinkType.rawIP, .rawIPv4] {
            try withParsed(packet, linkType: link) { p in
                #expect(p.layout.networkOffset == 0 && p.ethernet == nil)
                #expect(p.tcp?.payload.first == 1)
                #expect(p.transportChecksumStatus == .valid)
            }
        }
        #expect(parseError(packet, linkType: .rawIPv6) == .badIPVersion(4))
        let v6 = PacketBuilder.tcp6(TCPSpec(flags: .ack), ethernet: nil)
        try withParsed(v6, linkType: .rawIPv6) { p in #expect(p.layout.network == .ipv6) }
        try withParsed(v6, linkType: .rawIP) { p in #expect(p.tcp != nil) }
    }

    @Test("ICMPv4 echo and an error quoting a UDP datagram")
    func icmpv4() throws {
        let echo = PacketBuilder.build(
            .ipv4(IPv4Spec(), .icmp(.echo(identifier: 0x4242, sequence: 3, payload: [1, 2]))))
        try withParsed(echo) { p in
            let icmp = try #require(p.icmpv4)
            #expect(icmp.type == 8 && icmp.identifier == 0x4242 && icmp.sequenceNumber == 3 && icmp.isQuery)
            #expect(!icmp.isError)
            #expect(p.transportChecksumStatus == .valid)
        }
        let probe = PacketBuilder.build(
            .ipv4(
                IPv4Spec(),
                .udp(UDPSpec(sourcePort: 33333, destinationPort: 9, payload: Array(repeating: 1, count: 40)))),
            ethernet: nil)
        let error = PacketBuilder.build(
            .ipv4(
                IPv4Spec(source: replica4, destination: client4),
                .icmp(.error(type: 3, code: 3, quoting: probe, quoteLength: 28))))
        try withParsed(error) { p in
            let icmp = try #require(p.icmpv4)
            #expect(icmp.isError && icmp.code == 3)
            let inner = try icmp.embeddedPacket()
            #expect(inner.ipv4?.source == client4 && inner.ipv4?.destination == replica4)
            #expect(inner.transportProtocol == IPProtocol.udp)
            #expect(inner.sourcePort == 33333 && inner.destinationPort == 9)
            #expect(inner.layout.isTruncated, "the quote stops after 8 bytes of UDP")
            #expect(p.transportChecksumStatus == .valid)
        }
    }

    @Test("ICMPv6 echo, error, neighbour solicitation and advertisement")
    func icmpv6() throws {
        let echo = PacketBuilder.build(.ipv6(IPv6Spec(), .icmp(.echo(type: 128, identifier: 7, sequence: 1))))
        try withParsed(echo) { p in
            let icmp = try #require(p.icmpv6)
            #expect(icmp.type == 128 && icmp.identifier == 7)
            #expect(p.transportChecksumStatus == .valid)
        }
        let solicit = PacketBuilder.build(
            .ipv6(IPv6Spec(), .icmp(.neighborSolicitation(target: replica6, sourceMAC: clientMAC))))
        try withParsed(solicit) { p in
            let icmp = try #require(p.icmpv6)
            #expect(icmp.isNeighbourDiscovery && icmp.targetAddress == replica6)
            let options = Array(icmp.ndOptions)
            #expect(options.count == 1 && options.first?.type == 1 && options.first?.linkLayerAddress == clientMAC)
            #expect(p.transportChecksumStatus == .valid)
        }
        let advert = PacketBuilder.build(
            .ipv6(IPv6Spec(), .icmp(.neighborAdvertisement(target: replica6, targetMAC: replicaMAC))))
        try withParsed(advert) { p in
            let icmp = try #require(p.icmpv6)
            #expect(icmp.advertisementFlags == 0b011)
            #expect(icmp.ndOptions.map(\.type) == [2])
        }
        let quoted = PacketBuilder.tcp6(TCPSpec(sourcePort: 1234, destinationPort: 443, flags: .syn), ethernet: nil)
        let unreachable = PacketBuilder.build(.ipv6(IPv6Spec(), .icmp(.error(type: 1, code: 4, quoting: quoted))))
        try withParsed(unreachable) { p in
            let inner = try #require(p.icmpv6).embeddedPacket()
            #expect(inner.ipv6?.source == client6 && inner.sourcePort == 1234 && inner.destinationPort == 443)
            #expect(inner.tcpSequenceNumber == 1000)
            #expect(p.transportChecksumStatus == .valid)
        }
    }

    @Test("IPv4 fragments: first carries the header, later ones are data")
    func ipv4Fragments() throws {
        var ip = IPv4Spec()
        ip.dontFragment = false
        ip.identification = 0x77
        let datagram = PacketBuilder.ipv4(ip, .udp(UDPSpec(payload: Array(repeating: 0x55, count: 3000))))
        let fragments = PacketBuilder.fragmentIPv4(datagram, maxPayload: 1480)
        #expect(fragments.count == 3)
        try withParsed(fragments[0], linkType: .rawIPv4) { p in
            #expect(p.layout.isFragment && p.layout.moreFragments && p.layout.fragmentOffset == 0)
            #expect(p.layout.fragmentID == 0x77)
            #expect(p.udp?.length == 3008, "the UDP length covers the whole datagram")
            #expect(p.transportChecksumStatus == .notApplicable)
        }
        try withParsed(fragments[1], linkType: .rawIPv4) { p in
            #expect(p.layout.fragmentOffset == 1480 && p.layout.moreFragments)
            #expect(p.udp == nil && p.payload.count == 1480)
        }
        try withParsed(fragments[2], linkType: .rawIPv4) { p in
            #expect(p.layout.fragmentOffset == 2960 && !p.layout.moreFragments)
            #expect(p.payload.count == 3008 - 2960)
        }
    }

    @Test("IPv6 fragments with a fragment extension header")
    func ipv6Fragments() throws {
        let datagram = PacketBuilder.ipv6(
            IPv6Spec(), .icmp(.echo(type: 128, identifier: 9, sequence: 1, payload: Array(repeating: 1, count: 2000))))
        let fragments = PacketBuilder.fragmentIPv6(datagram, maxPayload: 1232, identification: 0xDEADBEEF)
        #expect(fragments.count == 2)
        try withParsed(fragments[0], linkType: .rawIPv6) { p in
            #expect(p.layout.isFragment && p.layout.fragmentID == 0xDEADBEEF && p.layout.fragmentHeaderOffset == 40)
            #expect(p.icmpv6?.identifier == 9)
        }
        try withParsed(fragments[1], linkType: .rawIPv6) { p in
            #expect(p.layout.fragmentOffset == 1232 && !p.layout.moreFragments)
            #expect(p.layout.transportProtocol == IPProtocol.icmpv6 && p.icmpv6 == nil)
        }
    }

    @Test("Other EtherTypes and IP protocols pass as opaque payload")
    func opaque() throws {
        let lldp = PacketBuilder.build(.other(etherType: 0x88CC, bytes: [1, 2, 3]))
        try withParsed(lldp) { p in
            #expect(p.layout.network == .other && Array(p.payload) == [1, 2, 3])
        }
        let gre = PacketBuilder.build(.ipv4(IPv4Spec(), .raw(protocolNumber: 47, bytes: [0, 0, 8, 0])))
        try withParsed(gre) { p in
            #expect(p.layout.transportProtocol == 47 && p.layout.transportHeaderLength == 0 && p.payload.count == 4)
            #expect(p.transportChecksumStatus == .notApplicable)
        }
    }

    @Test("Address text forms")
    func addresses() {
        #expect(IPv4Address("10.10.0.1") == client4)
        #expect(IPv4Address("10.10.0") == nil && IPv4Address("256.1.1.1") == nil && IPv4Address("1.2.3.4.") == nil)
        #expect(client6.description == "fd00:c010::1")
        #expect(IPv6Address("::ffff:10.0.0.1")?.low == 0x0000_FFFF_0A00_0001)
        #expect(MACAddress("52:54:00:00:00:02") == replicaMAC)
        #expect(replicaMAC.description == "52:54:00:00:00:02")
        #expect(IPAddress("fd00::1") != nil && IPAddress("nope") == nil)
    }
}
