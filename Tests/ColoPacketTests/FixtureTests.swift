import ColoCapture
import ColoPacket
import Foundation
import Testing

/// Real captures (Tests/Fixtures, recorded by Tools/record-fixtures.sh) parsed by us and compared field by field
/// with what tshark said about the same packets (manifest.tsv).
@Suite("Real captures against tshark")
struct FixtureTests {
    static let fixtures: String = {
        let here = #filePath
        let tests = here.split(separator: "/").dropLast(2).joined(separator: "/")
        return "/" + tests + "/Fixtures"
    }()

    struct Row {
        var fields: [String: String]
        /// The outermost value of a column (tshark lists quoted headers after the outer one).
        func outer(_ name: String) -> String? {
            guard let value = fields[name], !value.isEmpty else { return nil }
            return String(value.split(separator: ",").first ?? "")
        }
        /// The last value: for ICMP errors, the quoted header's.
        func inner(_ name: String) -> String? {
            guard let value = fields[name], !value.isEmpty else { return nil }
            return String(value.split(separator: ",").last ?? "")
        }
    }

    static func manifest() throws -> [String: [Row]] {
        let text = try String(contentsOfFile: fixtures + "/manifest.tsv", encoding: .utf8)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        let header = lines.removeFirst().split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        var byFile: [String: [Row]] = [:]
        for line in lines {
            let cells = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            var fields: [String: String] = [:]
            for (name, cell) in zip(header, cells) { fields[name] = cell }
            byFile[fields["file"] ?? "", default: []].append(Row(fields: fields))
        }
        return byFile
    }

    static func number(_ text: String?) -> UInt64? {
        guard let text else { return nil }
        if text.hasPrefix("0x") { return UInt64(text.dropFirst(2), radix: 16) }
        return UInt64(text)
    }

    static let files = [
        "ping4.pcap", "tcp4-http.pcap", "tcp4-rst.pcap", "udp4.pcap", "ping6.pcap", "tcp6-http.pcap", "udp6.pcap",
        "frag4.pcap", "frag6.pcap", "vlan.pcap",
    ]

    @Test("Every packet's fields and checksums match tshark", arguments: files)
    func compareWithTshark(file: String) throws {
        let manifest = try Self.manifest()
        let rows = try #require(manifest[file], "manifest.tsv has no rows for \(file)")
        let records = try CaptureReader.readAll(path: Self.fixtures + "/" + file)
        #expect(records.count == rows.count, "\(file): packet count")
        for (index, (record, row)) in zip(records, rows).enumerated() {
            let location = "\(file) packet \(index + 1)"
            try record.bytes.withUnsafeBytes { raw in
                let packet = try Packet(raw, linkType: record.linkType)
                let layout = packet.layout
                #expect(UInt64(raw.count) == Self.number(row.outer("frame.len")), "\(location): frame length")
                #expect(
                    UInt64(packet.ethernet?.outerEtherType ?? 0) == Self.number(row.outer("eth.type")),
                    "\(location): EtherType")
                if let vlan = Self.number(row.outer("vlan.id")) {
                    #expect(layout.vlanCount == 1 && UInt64(layout.outerVLAN.vlanID) == vlan, "\(location): VLAN id")
                }
                if let arpOp = Self.number(row.outer("arp.opcode")) {
                    #expect(UInt64(try #require(packet.arp, "\(location): ARP").operation) == arpOp)
                }
                #expect(packet.isIPv4HeaderChecksumValid, "\(location): IPv4 header checksum")
                switch packet.transportChecksumStatus {
                case .invalid(let stored, let expected):
                    Issue.record("\(location): transport checksum \(stored) should be \(expected)")
                default: break
                }
                if let ip = packet.ipv4 {
                    #expect(ip.source.description == row.outer("ip.src"), "\(location): IPv4 source")
                    #expect(ip.destination.description == row.outer("ip.dst"), "\(location): IPv4 destination")
                    #expect(UInt64(ip.protocolNumber) == Self.number(row.outer("ip.proto")), "\(location): protocol")
                    #expect(UInt64(ip.identification) == Self.number(row.outer("ip.id")), "\(location): IP id")
                    #expect(
                        UInt64(ip.fragmentOffset / 8) == Self.number(row.outer("ip.frag_offset")),
                        "\(location): fragment offset")
                    #expect((layout.moreFragments ? 1 : 0) == Self.number(row.outer("ip.flags.mf")), "\(location): MF")
                }
                if let ip = packet.ipv6 {
                    #expect(ip.source.description == row.outer("ipv6.src"), "\(location): IPv6 source")
                    #expect(ip.destination.description == row.outer("ipv6.dst"), "\(location): IPv6 destination")
                    #expect(UInt64(ip.nextHeader) == Self.number(row.outer("ipv6.nxt")), "\(location): next header")
                    if let offset = Self.number(row.outer("ipv6.fraghdr.offset")) {
                        #expect(
                            layout.isFragment && UInt64(layout.fragmentOffset / 8) == offset,
                            "\(location): fragment offset")
                        #expect(
                            UInt64(layout.fragmentID) == Self.number(row.outer("ipv6.fraghdr.ident")),
                            "\(location): fragment id")
                        #expect(
                            (layout.moreFragments ? 1 : 0) == Self.number(row.outer("ipv6.fraghdr.more")),
                            "\(location): M flag")
                    }
                }
                if let tcp = packet.tcp {
                    #expect(
                        UInt64(tcp.sourcePort) == Self.number(row.outer("tcp.srcport")), "\(location): TCP source port")
                    #expect(
                        UInt64(tcp.destinationPort) == Self.number(row.outer("tcp.dstport")),
                        "\(location): TCP destination port")
                    #expect(UInt64(tcp.sequenceNumber) == Self.number(row.outer("tcp.seq_raw")), "\(location): seq")
                    #expect(
                        UInt64(tcp.acknowledgmentNumber) == Self.number(row.outer("tcp.ack_raw")), "\(location): ack")
                    #expect(
                        UInt64(tcp.flags.rawValue) == Self.number(row.outer("tcp.flags")).map { $0 & 0xFF },
                        "\(location): flags")
                    #expect(
                        UInt64(tcp.payload.count) == Self.number(row.outer("tcp.len")),
                        "\(location): TCP payload length")
                    #expect(
                        UInt64(tcp.window) == Self.number(row.outer("tcp.window_size_value")), "\(location): window")
                    #expect(
                        tcp.maximumSegmentSize.map(UInt64.init) == Self.number(row.outer("tcp.options.mss_val")),
                        "\(location): MSS")
                    #expect(
                        tcp.windowScale.map(UInt64.init) == Self.number(row.outer("tcp.options.wscale.shift")),
                        "\(location): window scale")
                    #expect(
                        tcp.timestamp.map { UInt64($0.value) } == Self.number(row.outer("tcp.options.timestamp.tsval")),
                        "\(location): TSval")
                    #expect(
                        tcp.timestamp.map { UInt64($0.echoReply) }
                            == Self.number(row.outer("tcp.options.timestamp.tsecr")), "\(location): TSecr")
                }
                if let udp = packet.udp {
                    #expect(
                        UInt64(udp.sourcePort) == Self.number(row.outer("udp.srcport")), "\(location): UDP source port")
                    #expect(
                        UInt64(udp.destinationPort) == Self.number(row.outer("udp.dstport")),
                        "\(location): UDP destination port")
                    #expect(UInt64(udp.length) == Self.number(row.outer("udp.length")), "\(location): UDP length")
                }
                if let icmp = packet.icmpv4 {
                    #expect(UInt64(icmp.type) == Self.number(row.outer("icmp.type")), "\(location): ICMP type")
                    #expect(UInt64(icmp.code) == Self.number(row.outer("icmp.code")), "\(location): ICMP code")
                    if icmp.isQuery {
                        #expect(UInt64(icmp.identifier) == Self.number(row.outer("icmp.ident")), "\(location): ICMP id")
                    }
                    if icmp.isError {
                        let quoted = try icmp.embeddedPacket()
                        #expect(quoted.ipv4?.source.description == row.inner("ip.src"), "\(location): quoted source")
                        #expect(
                            UInt64(quoted.sourcePort) == Self.number(row.inner("udp.srcport")),
                            "\(location): quoted port"
                        )
                        #expect(
                            UInt64(quoted.destinationPort) == Self.number(row.inner("udp.dstport")),
                            "\(location): quoted port")
                    }
                }
                if let icmp = packet.icmpv6 {
                    #expect(UInt64(icmp.type) == Self.number(row.outer("icmpv6.type")), "\(location): ICMPv6 type")
                    #expect(UInt64(icmp.code) == Self.number(row.outer("icmpv6.code")), "\(location): ICMPv6 code")
                    if icmp.isError {
                        let quoted = try icmp.embeddedPacket()
                        #expect(quoted.ipv6?.source.description == row.inner("ipv6.src"), "\(location): quoted source")
                        #expect(
                            UInt64(quoted.destinationPort) == Self.number(row.inner("udp.dstport")),
                            "\(location): quoted port")
                    }
                    if icmp.isNeighbourDiscovery {
                        #expect(icmp.targetAddress != nil, "\(location): ND target")
                        #expect(
                            icmp.ndOptions.contains { $0.linkLayerAddress != nil }, "\(location): ND link-layer option")
                    }
                }
                // Fragment data past the first fragment: the offset column is what tells it apart.
                if layout.isFragment && layout.fragmentOffset != 0 {
                    #expect(packet.tcp == nil && packet.udp == nil && packet.icmpv4 == nil && packet.icmpv6 == nil)
                }
            }
        }
    }

    @Test("Every fixture packet truncated at every offset fails cleanly")
    func truncatedFixtures() throws {
        for file in Self.files {
            for record in try CaptureReader.readAll(path: Self.fixtures + "/" + file) {
                for length in 0..<record.bytes.count {
                    MalformedTests.parseAndTouch(Array(record.bytes.prefix(length)), record.linkType)
                }
            }
        }
    }
}
