/// An ICMPv4 message; `bytes` spans the 8-byte header and the body.
public struct ICMPv4Header {
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable public var type: UInt8 { bytes[0] }
    @inlinable public var code: UInt8 { bytes[1] }
    @inlinable public var checksum: UInt16 { bytes.be16(2) }
    /// Echo, timestamp and information messages: the identifier (the "port" conntrack keys on).
    @inlinable public var identifier: UInt16 { bytes.be16(4) }
    @inlinable public var sequenceNumber: UInt16 { bytes.be16(6) }
    /// Bytes 4..<8, whose meaning depends on the type (MTU for frag-needed, gateway for redirect).
    @inlinable public var restOfHeader: UInt32 { bytes.be32(4) }
    @inlinable public var body: UnsafeRawBufferPointer { bytes.slice(8, bytes.count - 8) }

    /// Destination unreachable, source quench, redirect, time exceeded, parameter problem: the types that quote
    /// the offending packet.
    @inlinable public var isError: Bool { Self.isError(type: type) }

    @inlinable public static func isError(type: UInt8) -> Bool {
        type == 3 || type == 4 || type == 5 || type == 11 || type == 12
    }

    /// Echo (8/0), timestamp (13/14), information (15/16), address mask (17/18): messages keyed by identifier.
    @inlinable public var isQuery: Bool { Self.isQuery(type: type) }

    @inlinable public static func isQuery(type: UInt8) -> Bool {
        switch type {
        case 0, 8, 13, 14, 15, 16, 17, 18: true
        default: false
        }
    }

    /// The packet quoted by an error message, parsed leniently (it is usually cut short).
    public func embeddedPacket() throws(ParseError) -> EmbeddedPacket {
        guard isError else { throw .notAnICMPError(type: type) }
        let inner = body
        return EmbeddedPacket(bytes: inner, layout: try PacketParser.parseEmbedded(inner, family: .ipv4))
    }
}

/// An ICMPv6 message; `bytes` spans the fixed part and the body.
public struct ICMPv6Header {
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public static let destinationUnreachable: UInt8 = 1
    public static let packetTooBig: UInt8 = 2
    public static let timeExceeded: UInt8 = 3
    public static let parameterProblem: UInt8 = 4
    public static let echoRequest: UInt8 = 128
    public static let echoReply: UInt8 = 129
    public static let routerSolicitation: UInt8 = 133
    public static let routerAdvertisement: UInt8 = 134
    public static let neighborSolicitation: UInt8 = 135
    public static let neighborAdvertisement: UInt8 = 136
    public static let redirect: UInt8 = 137

    @inlinable public var type: UInt8 { bytes[0] }
    @inlinable public var code: UInt8 { bytes[1] }
    @inlinable public var checksum: UInt16 { bytes.be16(2) }
    /// Echo request/reply identifier (only meaningful for those types).
    @inlinable public var identifier: UInt16 { bytes.be16(4) }
    @inlinable public var sequenceNumber: UInt16 { bytes.be16(6) }
    /// Packet-too-big MTU, parameter-problem pointer.
    @inlinable public var restOfHeader: UInt32 { bytes.be32(4) }
    @inlinable public var isError: Bool { type >= 1 && type <= 4 }
    @inlinable public var isNeighbourDiscovery: Bool { Self.isNeighbourDiscovery(type: type) }

    /// Target address of a neighbour solicitation/advertisement or redirect.
    @inlinable public var targetAddress: IPv6Address? {
        switch type {
        case Self.neighborSolicitation, Self.neighborAdvertisement, Self.redirect: IPv6Address(bytes, at: 8)
        default: nil
        }
    }
    /// Destination address of a redirect.
    @inlinable public var redirectDestination: IPv6Address? {
        type == Self.redirect ? IPv6Address(bytes, at: 24) : nil
    }
    /// Neighbour-advertisement flags: router, solicited, override (top three bits of byte 4).
    @inlinable public var advertisementFlags: UInt8 { type == Self.neighborAdvertisement ? bytes[4] >> 5 : 0 }

    /// Neighbour-discovery options (validated by the parser).
    public var ndOptions: NDOptions {
        let start = Self.fixedLength(type: type)
        return NDOptions(bytes: bytes, offset: isNeighbourDiscovery ? min(start, bytes.count) : bytes.count)
    }

    /// Bytes after the fixed part: echo data, the quoted packet of an error, the ND options.
    public var body: UnsafeRawBufferPointer {
        let start = min(Self.fixedLength(type: type), bytes.count)
        return bytes.slice(start, bytes.count - start)
    }

    /// The packet quoted by an error message, parsed leniently.
    public func embeddedPacket() throws(ParseError) -> EmbeddedPacket {
        guard isError else { throw .notAnICMPError(type: type) }
        let inner = body
        return EmbeddedPacket(bytes: inner, layout: try PacketParser.parseEmbedded(inner, family: .ipv6))
    }

    @inlinable public static func isNeighbourDiscovery(type: UInt8) -> Bool { type >= 133 && type <= 137 }

    /// Size of the part of each message type that precedes its options or body.
    @inlinable public static func fixedLength(type: UInt8) -> Int {
        switch type {
        case 1...4, 128, 129, routerSolicitation: 8
        case routerAdvertisement: 16
        case neighborSolicitation, neighborAdvertisement: 24
        case redirect: 40
        default: 4
        }
    }
}

/// One neighbour-discovery option.
public struct NDOption {
    /// 1 source link-layer address, 2 target link-layer address, 3 prefix information, 4 redirected header, 5 MTU.
    public let type: UInt8
    /// The option's bytes, type and length included.
    public let bytes: UnsafeRawBufferPointer

    /// The MAC address of a source/target link-layer address option on Ethernet.
    public var linkLayerAddress: MACAddress? {
        (type == 1 || type == 2) && bytes.count >= 8 ? MACAddress(bytes, at: 2) : nil
    }
}

/// Iterates neighbour-discovery options.
public struct NDOptions: Sequence, IteratorProtocol {
    let bytes: UnsafeRawBufferPointer
    var offset: Int

    public mutating func next() -> NDOption? {
        guard offset + 2 <= bytes.count else { return nil }
        let length = Int(bytes[offset + 1]) * 8
        guard length > 0, offset + length <= bytes.count else { return nil }
        let option = NDOption(type: bytes[offset], bytes: bytes.slice(offset, length))
        offset += length
        return option
    }

    static func validate(_ b: UnsafeRawBufferPointer, from start: Int, to end: Int) throws(ParseError) {
        var i = start
        while i < end {
            guard i + 2 <= end else { throw .badNDOption(type: b[i], length: 0, offset: i) }
            let length = Int(b[i + 1]) * 8
            guard length > 0, i + length <= end else { throw .badNDOption(type: b[i], length: length, offset: i) }
            i += length
        }
    }
}

/// The IP packet quoted inside an ICMP error: usually the IP header and 8 bytes of the upper layer.
public struct EmbeddedPacket {
    public let bytes: UnsafeRawBufferPointer
    public let layout: PacketLayout

    public var ipv4: IPv4Header? { layout.network == .ipv4 ? IPv4Header(bytes.slice(0, layout.networkEnd)) : nil }
    public var ipv6: IPv6Header? { layout.network == .ipv6 ? IPv6Header(bytes.slice(0, layout.networkEnd)) : nil }
    public var transportProtocol: UInt8 { layout.transportProtocol }
    /// True when the first 8 bytes of the upper-layer header are present (not for non-first fragments).
    public var hasTransportPrefix: Bool { layout.transportHeaderLength >= 8 }
    /// Source and destination port of a quoted TCP/UDP header.
    public var sourcePort: UInt16 { hasTransportPrefix ? bytes.be16(layout.transportOffset) : 0 }
    public var destinationPort: UInt16 { hasTransportPrefix ? bytes.be16(layout.transportOffset + 2) : 0 }
    /// Sequence number of a quoted TCP header.
    public var tcpSequenceNumber: UInt32 { hasTransportPrefix ? bytes.be32(layout.transportOffset + 4) : 0 }
    /// Type, code and identifier of a quoted ICMP/ICMPv6 message.
    public var icmpType: UInt8 { hasTransportPrefix ? bytes[layout.transportOffset] : 0 }
    public var icmpCode: UInt8 { hasTransportPrefix ? bytes[layout.transportOffset + 1] : 0 }
    public var icmpIdentifier: UInt16 { hasTransportPrefix ? bytes.be16(layout.transportOffset + 4) : 0 }
}
