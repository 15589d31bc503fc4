import ColoPacket
import ColoPacketBuilder
import Testing

/// Malformed input must produce a typed error or a view that can be read completely: never a trap. These run in
/// debug builds, where every raw load is bounds-checked, so an out-of-bounds read fails the test run.
@Suite("Malformed input")
struct MalformedTests {
    /// A sample of every header kind, built.
    static let samples: [(String, [UInt8], LinkType)] = {
        var list: [(String, [UInt8], LinkType)] = []
        let options: [TCPOptionSpec] = [
            .maximumSegmentSize(1460), .sackPermitted, .timestamp(value: 1, echoReply: 2), .noOperation,
            .windowScale(7),
        ]
        list.append(("tcp4-syn", PacketBuilder.tcp4(TCPSpec(flags: .syn, options: options)), .ethernet))
        list.append(("tcp6-data", PacketBuilder.tcp6(TCPSpec(flags: [.ack, .psh], payload: [1, 2, 3])), .ethernet))
        list.append(
            (
                "udp4-vlan",
                PacketBuilder.build(
                    .ipv4(IPv4Spec(), .udp(UDPSpec(payload: [1]))),
                    ethernet: EthernetSpec(vlanTags: [VLANTag(tpid: 0x8100, tci: 5)])), .ethernet
            ))
        list.append(("arp", PacketBuilder.build(.arp(ARPSpec())), .ethernet))
        let probe = PacketBuilder.build(.ipv4(IPv4Spec(), .udp(UDPSpec(payload: [1, 2, 3, 4]))), ethernet: nil)
        list.append(
            (
                "icmp4-error",
                PacketBuilder.build(
                    .ipv4(IPv4Spec(), .icmp(.error(type: 3, code: 3, quoting: probe))),
                    ethernet: nil), .rawIP
            ))
        let quoted6 = PacketBuilder.tcp6(TCPSpec(flags: .syn), ethernet: nil)
        list.append(
            (
                "icmp6-error",
                PacketBuilder.build(
                    .ipv6(IPv6Spec(), .icmp(.error(type: 1, code: 4, quoting: quoted6))),
                    ethernet: nil), .rawIP
            ))
        list.append(
            (
                "icmp6-ns",
                PacketBuilder.build(
                    .ipv6(IPv6Spec(), .icmp(.neighborSolicitation(target: replica6, sourceMAC: clientMAC)))), .ethernet
            ))
        var ext = IPv6Spec()
        ext.extensionHeaders = [
            .hopByHop([]), .destinationOptions([]), .fragment(offset: 0, more: true, identification: 1),
        ]
        list.append(
            ("ipv6-ext", PacketBuilder.build(.ipv6(ext, .udp(UDPSpec(payload: [1, 2]))), ethernet: nil), .rawIPv6))
        var ipopt = IPv4Spec()
        ipopt.options = [1, 1, 7, 3, 4]
        list.append(
            ("ipv4-options", PacketBuilder.build(.ipv4(ipopt, .icmp(.echo(identifier: 1, sequence: 1)))), .ethernet))
        return list
    }()

    /// Parses; on success reads every field. Returns whether it parsed.
    @discardableResult
    static func parseAndTouch(_ bytes: [UInt8], _ linkType: LinkType) -> Bool {
        bytes.withUnsafeBytes { raw in
            do throws(ParseError) {
                let packet = try Packet(raw, linkType: linkType)
                touchEverything(packet)
                return true
            } catch {
                #expect(!error.description.isEmpty && !error.reason.isEmpty)
                return false
            }
        }
    }

    @Test("Every sample truncated at every byte offset")
    func truncatedEverywhere() {
        for (name, bytes, link) in Self.samples {
            #expect(Self.parseAndTouch(bytes, link), "\(name) must parse whole")
            for length in 0..<bytes.count {
                // A cut inside the headers or the length-announced payload must be an error; cutting only
                // Ethernet padding cannot happen here because the samples have none.
                let parsed = Self.parseAndTouch(Array(bytes.prefix(length)), link)
                #expect(!parsed, "\(name) cut to \(length) of \(bytes.count) bytes must be refused")
            }
        }
    }

    @Test("Every sample with every single byte flipped parses or fails cleanly")
    func bitFlips() {
        for (_, bytes, link) in Self.samples {
            for index in bytes.indices {
                for mask: UInt8 in [0xFF, 0x80, 0x0F, 0x01] {
                    var copy = bytes
                    copy[index] ^= mask
                    Self.parseAndTouch(copy, link)
                }
            }
        }
    }

    @Test("Bad IHL values")
    func badIHL() {
        for ihl: UInt8 in [0, 1, 4, 15] {
            var ip = IPv4Spec()
            ip.ihlOverride = ihl
            let bytes = PacketBuilder.build(.ipv4(ip, .udp(UDPSpec())), ethernet: nil)
            guard case .badIPv4HeaderLength(let got, _) = parseError(bytes, linkType: .rawIP) else {
                Issue.record("IHL \(ihl) must be refused with badIPv4HeaderLength")
                continue
            }
            #expect(got == ihl)
        }
    }

    @Test("Bad IPv4 total length and IP version")
    func badTotalLength() {
        for total in [0, 19, 1000] {
            var ip = IPv4Spec()
            ip.totalLengthOverride = total
            let bytes = PacketBuilder.build(.ipv4(ip, .udp(UDPSpec())), ethernet: nil)
            guard case .badIPv4TotalLength = parseError(bytes, linkType: .rawIP) else {
                Issue.record("total length \(total) must be refused")
                continue
            }
        }
        var ip = IPv4Spec()
        ip.versionOverride = 5
        #expect(parseError(PacketBuilder.build(.ipv4(ip, .udp(UDPSpec()))), linkType: .ethernet) == .badIPVersion(5))
    }

    @Test("Bad IPv6 payload length")
    func badIPv6PayloadLength() {
        var ip = IPv6Spec()
        ip.payloadLengthOverride = 500
        let bytes = PacketBuilder.build(.ipv6(ip, .udp(UDPSpec())), ethernet: nil)
        #expect(parseError(bytes, linkType: .rawIPv6) == .badIPv6PayloadLength(payloadLength: 500, available: 8))
    }

    @Test("Extension-header loops and oversize chains")
    func extensionChains() {
        // Nine destination-options headers in a row: longer than the walk allows.
        var long = IPv6Spec()
        long.extensionHeaders = Array(repeating: .destinationOptions([]), count: 9)
        #expect(
            parseError(PacketBuilder.build(.ipv6(long, .udp(UDPSpec())), ethernet: nil), linkType: .rawIP)
                == .extensionChainTooLong(count: 9))
        // Hop-by-hop after another header is not allowed.
        var late = IPv6Spec()
        late.extensionHeaders = [.destinationOptions([]), .hopByHop([])]
        guard
            case .badExtensionHeader(0, _) = parseError(
                PacketBuilder.build(.ipv6(late, .udp(UDPSpec())), ethernet: nil), linkType: .rawIP)
        else {
            Issue.record("hop-by-hop after destination options must be refused")
            return
        }
        // Two fragment headers.
        var twice = IPv6Spec()
        twice.extensionHeaders = [
            .fragment(offset: 0, more: true, identification: 1), .fragment(offset: 0, more: true, identification: 1),
        ]
        guard
            case .badExtensionHeader(44, _) = parseError(
                PacketBuilder.build(.ipv6(twice, .udp(UDPSpec())), ethernet: nil), linkType: .rawIP)
        else {
            Issue.record("a second fragment header must be refused")
            return
        }
        // A header whose length field runs past the payload.
        var oversize = IPv6Spec()
        oversize.extensionHeaders = [.raw(kind: 60, bytes: [0, 200, 1, 4, 0, 0, 0, 0])]
        guard
            case .badExtensionHeader(60, _) = parseError(
                PacketBuilder.build(.ipv6(oversize, .udp(UDPSpec())), ethernet: nil), linkType: .rawIP)
        else {
            Issue.record("an extension header longer than the payload must be refused")
            return
        }
    }

    @Test("TCP data offset below 5 or beyond the segment")
    func tcpDataOffset() {
        for doff: UInt8 in [0, 4, 6, 15] {
            var tcp = TCPSpec(flags: .ack)
            tcp.dataOffsetOverride = doff
            let bytes = PacketBuilder.tcp4(tcp, ethernet: nil)
            guard case .badTCPDataOffset(let got, _) = parseError(bytes, linkType: .rawIP) else {
                Issue.record("data offset \(doff) must be refused")
                continue
            }
            #expect(got == doff)
        }
    }

    @Test("TCP option lengths 0, 1, overrunning and wrong for their kind")
    func tcpOptionLengths() {
        let cases: [[UInt8]] = [
            [2, 0, 0, 0],  // MSS length 0
            [8, 1, 0, 0],  // timestamp length 1
            [1, 1, 1, 3],  // window scale whose length byte is missing
            [30, 40, 0, 0],  // unknown kind overrunning the header
            [2, 3, 0, 0],  // MSS with length 3
            [5, 6, 0, 0, 0, 0, 0, 0],  // SACK with no whole block
        ]
        for option in cases {
            let bytes = PacketBuilder.tcp4(TCPSpec(flags: .ack, options: [.raw(option)]), ethernet: nil)
            guard case .badTCPOption = parseError(bytes, linkType: .rawIP) else {
                Issue.record("option bytes \(option) must be refused")
                continue
            }
        }
    }

    @Test("UDP length too small or too large")
    func udpLength() {
        for length in [0, 7, 100] {
            var udp = UDPSpec(payload: [1, 2])
            udp.lengthOverride = length
            let bytes = PacketBuilder.build(.ipv4(IPv4Spec(), .udp(udp)), ethernet: nil)
            #expect(parseError(bytes, linkType: .rawIP) == .badUDPLength(length: length, available: 10))
        }
    }

    @Test("ICMP errors quoting truncated or bogus packets")
    func icmpEmbeddedTruncated() throws {
        let probe = PacketBuilder.build(.ipv4(IPv4Spec(), .tcp(TCPSpec(flags: .syn))), ethernet: nil)
        for quote in 0...probe.count {
            let bytes = PacketBuilder.build(
                .ipv4(IPv4Spec(), .icmp(.error(type: 11, code: 0, quoting: probe, quoteLength: quote))), ethernet: nil)
            try withParsed(bytes, linkType: .rawIP) { p in
                let icmp = try #require(p.icmpv4)
                do throws(ParseError) {
                    let inner = try icmp.embeddedPacket()
                    #expect(quote >= 28, "a quote of \(quote) bytes cannot name the flow")
                    #expect(inner.sourcePort == 40000)
                } catch {
                    #expect(quote < 28, "a quote of \(quote) bytes names the flow: \(error)")
                }
            }
        }
        let probe6 = PacketBuilder.build(.ipv6(IPv6Spec(), .udp(UDPSpec())), ethernet: nil)
        for quote in 0...probe6.count {
            let bytes = PacketBuilder.build(
                .ipv6(IPv6Spec(), .icmp(.error(type: 1, code: 4, quoting: probe6, quoteLength: quote))), ethernet: nil)
            try withParsed(bytes, linkType: .rawIP) { p in
                let icmp = try #require(p.icmpv6)
                let parsed = (try? icmp.embeddedPacket()) != nil
                #expect(parsed == (quote >= 48), "a quote of \(quote) bytes: parsed \(parsed)")
            }
        }
        // A quoted packet claiming IHL 15 with only 20 bytes present.
        var inner = probe
        inner[0] = 0x4F
        let bogus = PacketBuilder.build(
            .ipv4(IPv4Spec(), .icmp(.error(type: 3, code: 1, quoting: inner, quoteLength: 28))), ethernet: nil)
        try withParsed(bogus, linkType: .rawIP) { p in
            #expect(throws: ParseError.self) { try #require(p.icmpv4).embeddedPacket() }
        }
        // Not an error message at all.
        let echo = PacketBuilder.build(.ipv4(IPv4Spec(), .icmp(.echo(identifier: 1, sequence: 1))), ethernet: nil)
        try withParsed(echo, linkType: .rawIP) { p in
            #expect(throws: ParseError.notAnICMPError(type: 8)) { try #require(p.icmpv4).embeddedPacket() }
        }
    }

    @Test("Neighbour-discovery option with length 0")
    func ndOptionZero() {
        var spec = ICMPSpec.neighborSolicitation(target: replica6, sourceMAC: clientMAC)
        spec.body[17] = 0
        let bytes = PacketBuilder.build(.ipv6(IPv6Spec(), .icmp(spec)), ethernet: nil)
        guard case .badNDOption(1, 0, _) = parseError(bytes, linkType: .rawIP) else {
            Issue.record("an ND option of length 0 must be refused")
            return
        }
    }

    @Test("ARP with address lengths beyond the frame")
    func arpLengths() {
        var spec = ARPSpec()
        spec.hardwareLengthOverride = 200
        guard case .badARPLength = parseError(PacketBuilder.build(.arp(spec))) else {
            Issue.record("ARP with hlen 200 must be refused")
            return
        }
    }

    @Test("Random bytes never trap")
    func randomBytes() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20000 {
            let length = Int.random(in: 0..<128, using: &generator)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Bias toward plausible headers so the deeper layers are reached.
            if bytes.count > 14 { bytes[12] = 0x08; bytes[13] = [0x00, 0xDD, 0x06][Int.random(in: 0..<3)] }
            if bytes.count > 14, bytes[13] == 0xDD { bytes[12] = 0x86 }
            if bytes.count > 15 { bytes[14] = [0x45, 0x46, 0x60][Int.random(in: 0..<3)] }
            for link in LinkType.allCases { Self.parseAndTouch(bytes, link) }
        }
    }
}
