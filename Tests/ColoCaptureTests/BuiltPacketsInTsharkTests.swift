import ColoCapture
import ColoPacket
import ColoPacketBuilder
import Foundation
import Testing

/// Every kind of packet the builders make, written with PcapWriter, must open in tshark with no malformed
/// packet, no bad checksum, and the protocol stack we meant.
@Suite struct BuiltPacketsInTsharkTests {
    static func corpus() -> [(expectedProtocols: String, frame: [UInt8])] {
        let tsOptions: [TCPOptionSpec] = [
            .maximumSegmentSize(1460), .sackPermitted, .timestamp(value: 1, echoReply: 0), .noOperation,
            .windowScale(7),
        ]
        var list: [(String, [UInt8])] = []
        list.append(("eth:ethertype:ip:tcp", PacketBuilder.tcp4(TCPSpec(flags: .syn, options: tsOptions))))
        list.append(
            (
                "eth:ethertype:ip:tcp",
                PacketBuilder.tcp4(
                    TCPSpec(
                        sequenceNumber: 5000, acknowledgmentNumber: 7000, flags: [.ack, .psh],
                        options: [.noOperation, .noOperation, .sack([SACKEdge(left: 6000, right: 6500)])],
                        payload: Array(repeating: 0x42, count: 300)))
            ))
        list.append(
            (
                "eth:ethertype:ipv6:tcp",
                PacketBuilder.tcp6(TCPSpec(flags: [.ack, .psh], payload: Array(repeating: 1, count: 64)))
            ))
        list.append(
            (
                "eth:ethertype:vlan:ethertype:ip:udp:data",
                PacketBuilder.build(
                    .ipv4(IPv4Spec(), .udp(UDPSpec(sourcePort: 40000, destinationPort: 7777, payload: [1, 2, 3]))),
                    ethernet: EthernetSpec(vlanTags: [VLANTag(tpid: 0x8100, tci: 100)]))
            ))
        list.append(
            (
                "eth:ethertype:ieee8021ad:ethertype:vlan:ethertype:ipv6:udp:data",
                PacketBuilder.build(
                    .ipv6(IPv6Spec(), .udp(UDPSpec(sourcePort: 40000, destinationPort: 7777, payload: [9]))),
                    ethernet: EthernetSpec(vlanTags: [VLANTag(tpid: 0x88A8, tci: 10), VLANTag(tpid: 0x8100, tci: 20)]))
            ))
        list.append(
            ("eth:ethertype:arp", PacketBuilder.build(.arp(ARPSpec()), ethernet: EthernetSpec(destination: .broadcast)))
        )
        list.append(
            (
                "eth:ethertype:ip:icmp:data",
                PacketBuilder.build(
                    .ipv4(IPv4Spec(), .icmp(.echo(identifier: 7, sequence: 1, payload: Array(repeating: 0, count: 56))))
                )
            ))
        let probe = PacketBuilder.build(
            .ipv4(IPv4Spec(), .udp(UDPSpec(sourcePort: 40001, destinationPort: 9, payload: [1]))), ethernet: nil)
        list.append(
            (
                "eth:ethertype:ip:icmp:ip:udp",
                PacketBuilder.build(
                    .ipv4(
                        IPv4Spec(source: IPv4Address(10, 10, 0, 2), destination: IPv4Address(10, 10, 0, 1)),
                        .icmp(.error(type: 3, code: 3, quoting: probe, quoteLength: 28))))
            ))
        list.append(
            (
                "eth:ethertype:ipv6:icmpv6",
                PacketBuilder.build(
                    .ipv6(
                        IPv6Spec(),
                        .icmp(
                            .neighborSolicitation(
                                target: IPv6Address(high: 0xFD00_C010_0000_0000, low: 2),
                                sourceMAC: MACAddress(0x52, 0x54, 0, 0, 0, 1)))))
            ))
        list.append(
            (
                "eth:ethertype:ipv6:icmpv6:data",
                PacketBuilder.build(
                    .ipv6(IPv6Spec(), .icmp(.echo(type: 128, identifier: 3, sequence: 1, payload: [1, 2, 3, 4]))))
            ))
        let quoted6 = PacketBuilder.build(.ipv6(IPv6Spec(), .udp(UDPSpec(destinationPort: 9))), ethernet: nil)
        list.append(
            (
                "eth:ethertype:ipv6:icmpv6:ipv6:udp",
                PacketBuilder.build(.ipv6(IPv6Spec(), .icmp(.error(type: 1, code: 4, quoting: quoted6))))
            ))
        var ext = IPv6Spec()
        ext.extensionHeaders = [.hopByHop([5, 2, 0, 0]), .destinationOptions([])]
        list.append(
            (
                "eth:ethertype:ipv6:ipv6.hopopts:ipv6.dstopts:udp:data",
                PacketBuilder.build(
                    .ipv6(ext, .udp(UDPSpec(sourcePort: 40000, destinationPort: 7777, payload: [5, 5]))))
            ))
        var fragmentable = IPv4Spec()
        fragmentable.dontFragment = false
        let big = PacketBuilder.ipv4(
            fragmentable, .icmp(.echo(identifier: 1, sequence: 1, payload: Array(repeating: 7, count: 3000))))
        for (index, fragment) in PacketBuilder.fragmentIPv4(big, maxPayload: 1480).enumerated() {
            // Reassembly is off, so only the first fragment is dissected past IP.
            let stack = index == 0 ? "eth:ethertype:ip:icmp:data" : "eth:ethertype:ip:data"
            list.append((stack, PacketBuilder.build(.other(etherType: EtherType.ipv4, bytes: fragment))))
        }
        return list
    }

    @Test func tsharkFindsNothingWrongWithBuiltPackets() throws {
        guard FileManager.default.isExecutableFile(atPath: TsharkInteropTests.tsharkPath) else {
            Issue.record("tshark is not installed; run Tools/install-deps.sh (as root)")
            return
        }
        let frames = Self.corpus()
        let file = TemporaryFile()
        let writer = try PcapWriter(path: file.path, linkType: .ethernet)
        for (index, item) in frames.enumerated() {
            try writer.write(bytes: item.frame, timestampNanoseconds: 1_700_000_000_000_000_000 + UInt64(index) * 1000)
        }
        try writer.close()
        let checks = [
            "tcp.check_checksum:TRUE", "udp.check_checksum:TRUE", "ip.check_checksum:TRUE", "ip.defragment:FALSE",
        ]
        let fields = [
            "frame.number", "frame.protocols", "_ws.malformed", "ip.checksum.status", "tcp.checksum.status",
            "udp.checksum.status", "icmp.checksum.status", "icmpv6.checksum.status", "_ws.expert.severity",
        ]
        var arguments = ["-r", file.path, "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]
        for check in checks { arguments += ["-o", check] }
        for field in fields { arguments += ["-e", field] }
        let (status, stdout, stderr) = try TsharkInteropTests.run(TsharkInteropTests.tsharkPath, arguments)
        #expect(status == 0, "tshark failed: \(stderr)")
        let lines = stdout.split(separator: "\n").map {
            $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        }
        #expect(lines.count == frames.count, "tshark read \(lines.count) of \(frames.count) packets")
        for (line, item) in zip(lines, frames) {
            guard line.count == fields.count else {
                Issue.record("unexpected tshark line \(line)")
                continue
            }
            #expect(line[1] == item.expectedProtocols, "packet \(line[0]) dissected as \(line[1])")
            #expect(line[2].isEmpty, "packet \(line[0]) is malformed to tshark")
            for (column, name) in [(3, "IPv4 header"), (4, "TCP"), (5, "UDP"), (6, "ICMP"), (7, "ICMPv6")] {
                // 0 is Bad, 1 Good, 2 Unverified (fragments, ICMP over fragments).
                #expect(line[column] != "0", "packet \(line[0]): bad \(name) checksum")
            }
            if line[1].hasSuffix(":tcp") || line[1].contains(":tcp:") {
                #expect(line[4] == "1", "packet \(line[0]): TCP checksum verified good")
            }
        }
    }
}
