/// Finds the headers of a packet without copying it: one pass over the bytes that validates every length field
/// and every option list, and records offsets in a `PacketLayout`.
///
/// A buffer either parses into a layout whose every header view can be read without going out of bounds, or
/// the parse throws a `ParseError` naming the field. Nothing is allocated.
public enum PacketParser {
    /// Extension headers walked before the chain is refused (RFC 8504 suggests limits of this order).
    public static let maxExtensionHeaders = 8
    /// VLAN tags read before the rest is treated as an unknown EtherType.
    public static let maxVLANTags = 2

    /// Parses an Ethernet frame or raw IP packet.
    @inlinable
    public static func parse(_ bytes: UnsafeRawBufferPointer, linkType: LinkType) throws(ParseError) -> PacketLayout {
        var layout = PacketLayout()
        try parse(bytes, linkType: linkType, into: &layout)
        return layout
    }

    /// Parses into a layout the caller keeps (a slot beside a queued buffer): the hot-path form, which avoids
    /// copying the layout out through the error-or-value return.
    public static func parse(_ bytes: UnsafeRawBufferPointer, linkType: LinkType, into layout: inout PacketLayout)
        throws(ParseError)
    {
        layout = PacketLayout()
        layout.linkType = linkType
        switch linkType {
        case .ethernet:
            try parseEthernet(bytes, into: &layout)
        case .rawIP, .rawIPv4, .rawIPv6:
            guard bytes.count >= 1 else {
                throw .truncated(layer: linkType == .rawIPv6 ? .ipv6 : .ipv4, offset: 0, needed: 20, available: 0)
            }
            let version = bytes[0] >> 4
            if version == 4 && linkType != .rawIPv6 {
                layout.etherType = EtherType.ipv4
                try parseIPv4(bytes, at: 0, end: bytes.count, lenient: false, into: &layout)
            } else if version == 6 && linkType != .rawIPv4 {
                layout.etherType = EtherType.ipv6
                try parseIPv6(bytes, at: 0, end: bytes.count, lenient: false, into: &layout)
            } else {
                throw .badIPVersion(version)
            }
        }
    }

    /// Parses the IP packet an ICMP error carries: its length fields may promise more than is present, and only
    /// the first 8 bytes of the upper-layer header are required (ports, TCP sequence number, ICMP id).
    public static func parseEmbedded(_ bytes: UnsafeRawBufferPointer, family: NetworkKind) throws(ParseError)
        -> PacketLayout
    {
        var layout = PacketLayout()
        layout.linkType = family == .ipv6 ? .rawIPv6 : .rawIPv4
        if family == .ipv6 {
            layout.etherType = EtherType.ipv6
            try parseIPv6(bytes, at: 0, end: bytes.count, lenient: true, into: &layout)
        } else {
            layout.etherType = EtherType.ipv4
            try parseIPv4(bytes, at: 0, end: bytes.count, lenient: true, into: &layout)
        }
        return layout
    }

    // MARK: - Link layer

    static func parseEthernet(_ b: UnsafeRawBufferPointer, into layout: inout PacketLayout) throws(ParseError) {
        guard b.count >= 14 else { throw .truncated(layer: .ethernet, offset: 0, needed: 14, available: b.count) }
        var etherType = b.be16(12)
        var offset = 14
        while etherType == EtherType.vlan || etherType == EtherType.qinq || etherType == EtherType.qinqLegacy {
            guard layout.vlanCount < maxVLANTags else { break }
            guard b.count - offset >= 4 else {
                throw .truncated(layer: .vlan, offset: offset, needed: 4, available: b.count - offset)
            }
            let tag = VLANTag(tpid: etherType, tci: b.be16(offset))
            if layout.vlanCount == 0 { layout.outerVLAN = tag } else { layout.innerVLAN = tag }
            layout.vlanCount += 1
            etherType = b.be16(offset + 2)
            offset += 4
        }
        layout.etherType = etherType
        layout.networkOffset = offset
        switch etherType {
        case EtherType.ipv4:
            try parseIPv4(b, at: offset, end: b.count, lenient: false, into: &layout)
        case EtherType.ipv6:
            try parseIPv6(b, at: offset, end: b.count, lenient: false, into: &layout)
        case EtherType.arp:
            try parseARP(b, at: offset, into: &layout)
        default:
            layout.network = .other
            layout.networkEnd = b.count
            layout.transportOffset = b.count
            layout.payloadOffset = offset
            layout.payloadEnd = b.count
        }
    }

    static func parseARP(_ b: UnsafeRawBufferPointer, at offset: Int, into layout: inout PacketLayout)
        throws(ParseError)
    {
        let available = b.count - offset
        guard available >= 8 else { throw .truncated(layer: .arp, offset: offset, needed: 8, available: available) }
        let hlen = b[offset + 4]
        let plen = b[offset + 5]
        let length = 8 + 2 * (Int(hlen) + Int(plen))
        guard length <= available else {
            throw .badARPLength(hardwareLength: hlen, protocolLength: plen, available: available)
        }
        layout.network = .arp
        layout.networkOffset = offset
        layout.networkEnd = offset + length
        layout.transportOffset = offset + length
        layout.payloadOffset = offset + length
        layout.payloadEnd = offset + length
    }

    // MARK: - IPv4

    static func parseIPv4(
        _ b: UnsafeRawBufferPointer, at offset: Int, end: Int, lenient: Bool, into layout: inout PacketLayout
    ) throws(ParseError) {
        let available = end - offset
        guard available >= 20 else { throw .truncated(layer: .ipv4, offset: offset, needed: 20, available: available) }
        let versionIHL = b[offset]
        guard versionIHL >> 4 == 4 else { throw .badIPVersion(versionIHL >> 4) }
        let ihl = versionIHL & 0x0F
        let headerLength = Int(ihl) * 4
        guard ihl >= 5, headerLength <= available else {
            throw .badIPv4HeaderLength(ihl: ihl, available: available)
        }
        let totalLength = Int(b.be16(offset + 2))
        var datagramEnd = offset + totalLength
        if lenient {
            guard totalLength >= headerLength else {
                throw .badIPv4TotalLength(totalLength: totalLength, headerLength: headerLength, available: available)
            }
            if datagramEnd > end {
                datagramEnd = end
                layout.isTruncated = true
            }
        } else {
            guard totalLength >= headerLength, totalLength <= available else {
                throw .badIPv4TotalLength(totalLength: totalLength, headerLength: headerLength, available: available)
            }
        }
        if headerLength > 20 {
            try validateIPv4Options(b, from: offset + 20, to: offset + headerLength)
        }
        let fragmentField = b.be16(offset + 6)
        layout.network = .ipv4
        layout.networkOffset = offset
        layout.networkEnd = datagramEnd
        layout.ipHeaderLength = headerLength
        layout.fragmentOffset = Int(fragmentField & 0x1FFF) &* 8
        layout.moreFragments = fragmentField & 0x2000 != 0
        layout.isFragment = layout.moreFragments || layout.fragmentOffset != 0
        layout.fragmentID = UInt32(b.be16(offset + 4))
        let proto = b[offset + 9]
        layout.transportProtocol = proto
        try parseTransport(
            b, proto: proto, at: offset + headerLength, end: datagramEnd, lenient: lenient, into: &layout)
    }

    static func validateIPv4Options(_ b: UnsafeRawBufferPointer, from start: Int, to end: Int) throws(ParseError) {
        var i = start
        while i < end {
            let kind = b[i]
            if kind == 0 { return }  // end of option list; the rest is padding
            if kind == 1 {
                i += 1
                continue
            }
            guard i + 1 < end else { throw .badIPv4Option(kind: kind, length: 0, offset: i) }
            let length = Int(b[i + 1])
            guard length >= 2, i + length <= end else { throw .badIPv4Option(kind: kind, length: length, offset: i) }
            i += length
        }
    }

    // MARK: - IPv6

    static func parseIPv6(
        _ b: UnsafeRawBufferPointer, at offset: Int, end: Int, lenient: Bool, into layout: inout PacketLayout
    ) throws(ParseError) {
        let available = end - offset
        guard available >= 40 else { throw .truncated(layer: .ipv6, offset: offset, needed: 40, available: available) }
        let version = b[offset] >> 4
        guard version == 6 else { throw .badIPVersion(version) }
        let payloadLength = Int(b.be16(offset + 4))
        var datagramEnd = offset + 40 + payloadLength
        if datagramEnd > end {
            guard lenient else { throw .badIPv6PayloadLength(payloadLength: payloadLength, available: available - 40) }
            datagramEnd = end
            layout.isTruncated = true
        }
        layout.network = .ipv6
        layout.networkOffset = offset
        layout.networkEnd = datagramEnd

        var next = b[offset + 6]
        var cursor = offset + 40
        var count = 0
        var sawFragmentHeader = false
        walk: while true {
            let headerLength: Int
            switch next {
            case IPProtocol.hopByHop, IPProtocol.ipv6Routing, IPProtocol.ipv6DestinationOptions,
                IPProtocol.mobility, IPProtocol.hip, IPProtocol.shim6:
                if next == IPProtocol.hopByHop && count != 0 {
                    throw .badExtensionHeader(nextHeader: next, offset: cursor)
                }
                guard datagramEnd - cursor >= 8 else {
                    throw .truncated(layer: .ipv6Extension, offset: cursor, needed: 8, available: datagramEnd - cursor)
                }
                headerLength = (Int(b[cursor + 1]) + 1) * 8
            case IPProtocol.ah:
                guard datagramEnd - cursor >= 8 else {
                    throw .truncated(layer: .ipv6Extension, offset: cursor, needed: 8, available: datagramEnd - cursor)
                }
                headerLength = (Int(b[cursor + 1]) + 2) * 4
            case IPProtocol.ipv6Fragment:
                guard !sawFragmentHeader else { throw .badExtensionHeader(nextHeader: next, offset: cursor) }
                guard datagramEnd - cursor >= 8 else {
                    throw .truncated(layer: .ipv6Extension, offset: cursor, needed: 8, available: datagramEnd - cursor)
                }
                sawFragmentHeader = true
                let field = b.be16(cursor + 2)
                layout.fragmentHeaderOffset = cursor
                layout.fragmentOffset = Int(field & 0xFFF8)
                layout.moreFragments = field & 1 != 0
                layout.isFragment = true
                layout.fragmentID = b.be32(cursor + 4)
                headerLength = 8
            default:
                break walk
            }
            guard headerLength <= datagramEnd - cursor else {
                throw .badExtensionHeader(nextHeader: next, offset: cursor)
            }
            count += 1
            guard count <= maxExtensionHeaders else { throw .extensionChainTooLong(count: count) }
            next = b[cursor]
            cursor += headerLength
            // Past a non-first fragment's header the bytes are the middle of someone else's payload.
            if sawFragmentHeader && layout.fragmentOffset != 0 { break walk }
        }
        layout.extensionHeaderCount = count
        layout.ipHeaderLength = cursor - offset
        layout.transportProtocol = next
        if next == IPProtocol.noNextHeader {
            layout.transportOffset = cursor
            layout.payloadOffset = cursor
            layout.payloadEnd = datagramEnd
            return
        }
        try parseTransport(b, proto: next, at: cursor, end: datagramEnd, lenient: lenient, into: &layout)
    }

    // MARK: - Transport

    static func parseTransport(
        _ b: UnsafeRawBufferPointer, proto: UInt8, at offset: Int, end: Int, lenient: Bool,
        into layout: inout PacketLayout
    ) throws(ParseError) {
        layout.transportOffset = offset
        layout.payloadEnd = end
        // Only the first fragment carries the upper-layer header.
        guard layout.fragmentOffset == 0 else {
            layout.payloadOffset = offset
            return
        }
        let available = end - offset
        let isV6 = layout.network == .ipv6
        let layer: PacketLayer
        let minimum: Int
        switch proto {
        case IPProtocol.tcp:
            layer = .tcp
            minimum = 20
        case IPProtocol.udp:
            layer = .udp
            minimum = 8
        case IPProtocol.icmp where !isV6:
            layer = .icmp
            minimum = 8
        case IPProtocol.icmpv6 where isV6:
            layer = .icmpv6
            minimum = 4
        default:
            layout.payloadOffset = offset
            return
        }
        if lenient {
            // An ICMP error quotes at least 8 bytes of the offending header: enough for ports and ids.
            guard available >= 8 else {
                throw .truncated(layer: .embedded, offset: offset, needed: 8, available: available)
            }
            layout.transportHeaderLength = 8
            layout.transportHeaderComplete = false
            layout.payloadOffset = offset + 8
            return
        }
        guard available >= minimum else {
            throw .truncated(layer: layer, offset: offset, needed: minimum, available: available)
        }
        switch proto {
        case IPProtocol.tcp:
            let dataOffset = b[offset + 12] >> 4
            let headerLength = Int(dataOffset) * 4
            guard dataOffset >= 5, headerLength <= available else {
                throw .badTCPDataOffset(dataOffset: dataOffset, available: available)
            }
            if headerLength > 20 {
                try TCPOptions.validate(b, from: offset + 20, to: offset + headerLength)
            }
            layout.transportHeaderLength = headerLength
        case IPProtocol.udp:
            let length = Int(b.be16(offset + 4))
            if layout.isFragment {
                // The length covers the whole datagram, which this fragment only starts.
                guard length >= 8 else { throw .badUDPLength(length: length, available: available) }
            } else {
                guard length >= 8, length <= available else {
                    throw .badUDPLength(length: length, available: available)
                }
                layout.payloadEnd = offset + length
            }
            layout.transportHeaderLength = 8
        case IPProtocol.icmp:
            layout.transportHeaderLength = 8
        default:  // ICMPv6
            let type = b[offset]
            let fixed = ICMPv6Header.fixedLength(type: type)
            guard available >= fixed else {
                throw .truncated(layer: .icmpv6, offset: offset, needed: fixed, available: available)
            }
            if ICMPv6Header.isNeighbourDiscovery(type: type) && !layout.isFragment {
                try NDOptions.validate(b, from: offset + fixed, to: end)
            }
            layout.transportHeaderLength = fixed
        }
        layout.transportHeaderComplete = true
        layout.payloadOffset = offset + layout.transportHeaderLength
    }
}
