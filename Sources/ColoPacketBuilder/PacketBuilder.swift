import ColoPacket

/// Builds packets byte by byte from specs, with correct checksums unless a spec asks for a broken one.
///
/// For tests, benchmarks and tools: it allocates freely and favours clarity over speed.
public enum PacketBuilder {
    /// An Ethernet frame (`ethernet` given) or a raw IP packet (`ethernet` nil).
    public static func build(_ network: NetworkSpec, ethernet: EthernetSpec? = EthernetSpec()) -> [UInt8] {
        let (etherType, body) = networkBytes(network)
        guard let eth = ethernet else { return body }
        var frame = eth.destination.bytes + eth.source.bytes
        for tag in eth.vlanTags { frame += be16(tag.tpid) + be16(tag.tci) }
        frame += be16(eth.etherTypeOverride ?? etherType)
        return frame + body
    }

    /// Convenience: a TCP/IPv4 frame.
    public static func tcp4(
        _ tcp: TCPSpec, ip: IPv4Spec = IPv4Spec(), ethernet: EthernetSpec? = EthernetSpec()
    ) -> [UInt8] {
        build(.ipv4(ip, .tcp(tcp)), ethernet: ethernet)
    }

    /// Convenience: a TCP/IPv6 frame.
    public static func tcp6(
        _ tcp: TCPSpec, ip: IPv6Spec = IPv6Spec(), ethernet: EthernetSpec? = EthernetSpec()
    ) -> [UInt8] {
        build(.ipv6(ip, .tcp(tcp)), ethernet: ethernet)
    }

    static func networkBytes(_ network: NetworkSpec) -> (UInt16, [UInt8]) {
        switch network {
        case .ipv4(let ip, let transport): (EtherType.ipv4, ipv4(ip, transport))
        case .ipv6(let ip, let transport): (EtherType.ipv6, ipv6(ip, transport))
        case .arp(let arp): (EtherType.arp, arpBytes(arp))
        case .other(let type, let bytes): (type, bytes)
        }
    }

    // MARK: - IPv4

    /// A raw IPv4 packet.
    public static func ipv4(_ ip: IPv4Spec, _ transport: TransportSpec) -> [UInt8] {
        let proto = transport.protocolNumber == 0 ? IPProtocol.icmp : transport.protocolNumber
        let pseudo = { (length: Int) in
            Checksum.pseudoHeaderSum(source: ip.source, destination: ip.destination, protocol: proto, length: length)
        }
        let l4 = transportBytes(transport, pseudoHeaderSum: pseudo, icmpUsesPseudoHeader: false)
        var options = ip.options
        while options.count % 4 != 0 { options.append(0) }
        let headerLength = 20 + options.count
        var header = [UInt8](repeating: 0, count: 20)
        header[0] = (ip.versionOverride ?? 4) << 4 | (ip.ihlOverride ?? UInt8(headerLength / 4))
        header[1] = ip.typeOfService
        header.replaceSubrange(
            2..<4, with: be16(UInt16(truncatingIfNeeded: ip.totalLengthOverride ?? (headerLength + l4.count))))
        header.replaceSubrange(4..<6, with: be16(ip.identification))
        var fragmentField = UInt16(truncatingIfNeeded: ip.fragmentOffset / 8) & 0x1FFF
        if ip.dontFragment { fragmentField |= 0x4000 }
        if ip.moreFragments { fragmentField |= 0x2000 }
        header.replaceSubrange(6..<8, with: be16(fragmentField))
        header[8] = ip.ttl
        header[9] = ip.protocolOverride ?? proto
        header.replaceSubrange(12..<16, with: ip.source.bytes)
        header.replaceSubrange(16..<20, with: ip.destination.bytes)
        header += options
        var checksum = header.withUnsafeBytes { Checksum.finish(Checksum.sum($0)) }
        if ip.corruptHeaderChecksum { checksum ^= 0x5A5A }
        header.replaceSubrange(10..<12, with: be16(checksum))
        return header + l4
    }

    // MARK: - IPv6

    /// A raw IPv6 packet.
    public static func ipv6(_ ip: IPv6Spec, _ transport: TransportSpec) -> [UInt8] {
        let proto = transport.protocolNumber == 0 ? IPProtocol.icmpv6 : transport.protocolNumber
        let pseudo = { (length: Int) in
            Checksum.pseudoHeaderSum(source: ip.source, destination: ip.destination, protocol: proto, length: length)
        }
        let l4 = transportBytes(transport, pseudoHeaderSum: pseudo, icmpUsesPseudoHeader: true)
        var extensions: [UInt8] = []
        for (index, ext) in ip.extensionHeaders.enumerated() {
            let next = index + 1 < ip.extensionHeaders.count ? ip.extensionHeaders[index + 1].kind : proto
            extensions += extensionBytes(ext, next: next)
        }
        let first = ip.extensionHeaders.first?.kind ?? proto
        var header = [UInt8](repeating: 0, count: 40)
        let word0 = UInt32(6) << 28 | UInt32(ip.trafficClass) << 20 | (ip.flowLabel & 0xFFFFF)
        header.replaceSubrange(0..<4, with: be32(word0))
        header.replaceSubrange(
            4..<6, with: be16(UInt16(truncatingIfNeeded: ip.payloadLengthOverride ?? (extensions.count + l4.count))))
        header[6] = ip.nextHeaderOverride ?? first
        header[7] = ip.hopLimit
        header.replaceSubrange(8..<24, with: ip.source.bytes)
        header.replaceSubrange(24..<40, with: ip.destination.bytes)
        return header + extensions + l4
    }

    static func extensionBytes(_ ext: IPv6ExtensionSpec, next: UInt8) -> [UInt8] {
        switch ext {
        case .hopByHop(let options), .destinationOptions(let options):
            var body = options
            let padding = (8 - (body.count + 2) % 8) % 8
            if padding == 1 {
                body.append(0)  // Pad1
            } else if padding > 1 {
                body += [1, UInt8(padding - 2)] + [UInt8](repeating: 0, count: padding - 2)  // PadN
            }
            return [next, UInt8((body.count + 2) / 8 - 1)] + body
        case .routing(let type, let left, let data):
            var body = [type, left] + data
            while (body.count + 2) % 8 != 0 { body.append(0) }
            return [next, UInt8((body.count + 2) / 8 - 1)] + body
        case .fragment(let offset, let more, let identification):
            let field = UInt16(truncatingIfNeeded: offset) & 0xFFF8 | (more ? 1 : 0)
            return [next, 0] + be16(field) + be32(identification)
        case .authentication(let spi, let sequence, let icv):
            let total = 12 + icv.count
            return [next, UInt8(total / 4 - 2), 0, 0] + be32(spi) + be32(sequence) + icv
        case .raw(_, let bytes):
            guard !bytes.isEmpty else { return [] }
            return [next] + bytes.dropFirst()
        }
    }

    // MARK: - Upper layers

    static func transportBytes(
        _ transport: TransportSpec, pseudoHeaderSum: (Int) -> UInt16, icmpUsesPseudoHeader: Bool
    ) -> [UInt8] {
        switch transport {
        case .tcp(let tcp):
            var options = tcp.options.flatMap(\.bytes)
            while options.count % 4 != 0 { options.append(0) }
            var segment = be16(tcp.sourcePort) + be16(tcp.destinationPort)
            segment += be32(tcp.sequenceNumber) + be32(tcp.acknowledgmentNumber)
            let dataOffset = tcp.dataOffsetOverride ?? UInt8((20 + options.count) / 4)
            segment += [dataOffset << 4, tcp.flags.rawValue] + be16(tcp.window) + [0, 0] + be16(tcp.urgentPointer)
            segment += options + tcp.payload
            var checksum = Checksum.finish(sumOf(segment, plus: pseudoHeaderSum(segment.count)))
            if tcp.corruptChecksum { checksum ^= 0xA5A5 }
            segment.replaceSubrange(16..<18, with: be16(checksum))
            return segment
        case .udp(let udp):
            let length = udp.lengthOverride ?? (8 + udp.payload.count)
            var datagram = be16(udp.sourcePort) + be16(udp.destinationPort)
            datagram += be16(UInt16(truncatingIfNeeded: length)) + [0, 0] + udp.payload
            var checksum = Checksum.finish(sumOf(datagram, plus: pseudoHeaderSum(datagram.count)))
            if checksum == 0 { checksum = 0xFFFF }
            if udp.corruptChecksum { checksum ^= 0xA5A5 }
            if udp.omitChecksum { checksum = 0 }
            datagram.replaceSubrange(6..<8, with: be16(checksum))
            return datagram
        case .icmp(let icmp):
            var message = [icmp.type, icmp.code, 0, 0] + be32(icmp.restOfHeader) + icmp.body
            let pseudo = icmpUsesPseudoHeader ? pseudoHeaderSum(message.count) : 0
            var checksum = Checksum.finish(sumOf(message, plus: pseudo))
            if icmp.corruptChecksum { checksum ^= 0xA5A5 }
            message.replaceSubrange(2..<4, with: be16(checksum))
            return message
        case .raw(_, let bytes):
            return bytes
        }
    }

    static func arpBytes(_ arp: ARPSpec) -> [UInt8] {
        var bytes = be16(1) + be16(EtherType.ipv4)
        bytes += [arp.hardwareLengthOverride ?? 6, arp.protocolLengthOverride ?? 4] + be16(arp.operation)
        bytes += arp.senderMAC.bytes + arp.senderIP.bytes + arp.targetMAC.bytes + arp.targetIP.bytes
        return bytes
    }

    static func sumOf(_ bytes: [UInt8], plus initial: UInt16) -> UInt16 {
        bytes.withUnsafeBytes { Checksum.combine(Checksum.sum($0), initial) }
    }

    // MARK: - Fragmentation

    /// Splits a raw IPv4 packet into fragments carrying at most `maxPayload` bytes each (rounded down to 8).
    public static func fragmentIPv4(_ packet: [UInt8], maxPayload: Int) -> [[UInt8]] {
        let headerLength = Int(packet[0] & 0x0F) * 4
        let header = Array(packet[0..<headerLength])
        let data = Array(packet[headerLength...])
        let step = max(8, maxPayload / 8 * 8)
        var fragments: [[UInt8]] = []
        var offset = 0
        while offset < data.count {
            let end = min(offset + step, data.count)
            var h = header
            h.replaceSubrange(2..<4, with: be16(UInt16(headerLength + end - offset)))
            var field = UInt16(offset / 8) & 0x1FFF
            if end < data.count { field |= 0x2000 }
            h.replaceSubrange(6..<8, with: be16(field))
            h.replaceSubrange(10..<12, with: [0, 0])
            let checksum = h.withUnsafeBytes { Checksum.finish(Checksum.sum($0)) }
            h.replaceSubrange(10..<12, with: be16(checksum))
            fragments.append(h + data[offset..<end])
            offset = end
        }
        return fragments
    }

    /// Splits a raw IPv6 packet (no extension headers of its own) into fragments with a fragment header.
    public static func fragmentIPv6(_ packet: [UInt8], maxPayload: Int, identification: UInt32) -> [[UInt8]] {
        let next = packet[6]
        let data = Array(packet[40...])
        let step = max(8, maxPayload / 8 * 8)
        var fragments: [[UInt8]] = []
        var offset = 0
        while offset < data.count {
            let end = min(offset + step, data.count)
            var h = Array(packet[0..<40])
            h.replaceSubrange(4..<6, with: be16(UInt16(8 + end - offset)))
            h[6] = IPProtocol.ipv6Fragment
            let field = UInt16(offset) & 0xFFF8 | (end < data.count ? 1 : 0)
            fragments.append(h + [next, 0] + be16(field) + be32(identification) + data[offset..<end])
            offset = end
        }
        return fragments
    }
}
