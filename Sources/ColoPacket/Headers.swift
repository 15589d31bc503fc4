/// The Ethernet II header of a frame (addresses and the outermost EtherType).
public struct EthernetHeader {
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable public var destination: MACAddress { MACAddress(bytes, at: 0) }
    @inlinable public var source: MACAddress { MACAddress(bytes, at: 6) }
    /// The EtherType right after the addresses: a VLAN TPID when the frame is tagged.
    @inlinable public var outerEtherType: UInt16 { bytes.be16(12) }
}

/// An ARP packet. Addresses are exposed typed for the Ethernet/IPv4 case and as raw bytes otherwise.
public struct ARPHeader {
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable public var hardwareType: UInt16 { bytes.be16(0) }
    @inlinable public var protocolType: UInt16 { bytes.be16(2) }
    @inlinable public var hardwareLength: Int { Int(bytes[4]) }
    @inlinable public var protocolLength: Int { Int(bytes[5]) }
    /// 1 request, 2 reply (3/4 RARP).
    @inlinable public var operation: UInt16 { bytes.be16(6) }
    /// True for the usual Ethernet (6-byte) / IPv4 (4-byte) form, where the typed accessors below apply.
    @inlinable public var isEthernetIPv4: Bool { hardwareLength == 6 && protocolLength == 4 }

    @inlinable public var senderHardwareAddress: UnsafeRawBufferPointer { bytes.slice(8, hardwareLength) }
    @inlinable public var senderProtocolAddress: UnsafeRawBufferPointer {
        bytes.slice(8 + hardwareLength, protocolLength)
    }
    @inlinable public var targetHardwareAddress: UnsafeRawBufferPointer {
        bytes.slice(8 + hardwareLength + protocolLength, hardwareLength)
    }
    @inlinable public var targetProtocolAddress: UnsafeRawBufferPointer {
        bytes.slice(8 + 2 * hardwareLength + protocolLength, protocolLength)
    }

    /// Sender MAC, when `isEthernetIPv4`.
    @inlinable public var senderMAC: MACAddress? { isEthernetIPv4 ? MACAddress(bytes, at: 8) : nil }
    @inlinable public var senderIPv4: IPv4Address? { isEthernetIPv4 ? IPv4Address(bytes, at: 14) : nil }
    @inlinable public var targetMAC: MACAddress? { isEthernetIPv4 ? MACAddress(bytes, at: 18) : nil }
    @inlinable public var targetIPv4: IPv4Address? { isEthernetIPv4 ? IPv4Address(bytes, at: 24) : nil }
}

/// An IPv4 header; `bytes` spans the whole datagram (header and payload).
public struct IPv4Header {
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable public var version: UInt8 { bytes[0] >> 4 }
    @inlinable public var headerLength: Int { Int(bytes[0] & 0x0F) * 4 }
    /// The whole second byte: DSCP (6 bits) and ECN (2 bits).
    @inlinable public var typeOfService: UInt8 { bytes[1] }
    @inlinable public var dscp: UInt8 { bytes[1] >> 2 }
    @inlinable public var ecn: UInt8 { bytes[1] & 3 }
    @inlinable public var totalLength: Int { Int(bytes.be16(2)) }
    @inlinable public var identification: UInt16 { bytes.be16(4) }
    @inlinable public var dontFragment: Bool { bytes.be16(6) & 0x4000 != 0 }
    @inlinable public var moreFragments: Bool { bytes.be16(6) & 0x2000 != 0 }
    /// Fragment offset in bytes (the field × 8).
    @inlinable public var fragmentOffset: Int { Int(bytes.be16(6) & 0x1FFF) * 8 }
    @inlinable public var ttl: UInt8 { bytes[8] }
    @inlinable public var protocolNumber: UInt8 { bytes[9] }
    @inlinable public var headerChecksum: UInt16 { bytes.be16(10) }
    @inlinable public var source: IPv4Address { IPv4Address(bytes, at: 12) }
    @inlinable public var destination: IPv4Address { IPv4Address(bytes, at: 16) }
    /// Option bytes between the fixed header and the payload (may be empty).
    @inlinable public var options: UnsafeRawBufferPointer { bytes.slice(20, headerLength - 20) }
    /// True when the header checksum sums to zero, as a receiver checks it.
    @inlinable public var isHeaderChecksumValid: Bool {
        Checksum.sum(bytes.slice(0, headerLength)) == 0xFFFF
    }
}

/// An IPv6 fixed header; `bytes` spans the whole datagram (extension headers and payload included).
public struct IPv6Header {
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable public var version: UInt8 { bytes[0] >> 4 }
    @inlinable public var trafficClass: UInt8 { UInt8(truncatingIfNeeded: bytes.be16(0) >> 4) }
    @inlinable public var flowLabel: UInt32 { bytes.be32(0) & 0x000F_FFFF }
    @inlinable public var payloadLength: Int { Int(bytes.be16(4)) }
    /// The next-header field of the fixed header (the first extension header, if any).
    @inlinable public var nextHeader: UInt8 { bytes[6] }
    @inlinable public var hopLimit: UInt8 { bytes[7] }
    @inlinable public var source: IPv6Address { IPv6Address(bytes, at: 8) }
    @inlinable public var destination: IPv6Address { IPv6Address(bytes, at: 24) }
    /// The extension headers up to `headerLength` (as found by the parser), in order.
    public func extensionHeaders(headerLength: Int) -> IPv6ExtensionHeaders {
        IPv6ExtensionHeaders(bytes: bytes, first: nextHeader, end: headerLength)
    }
}

/// One IPv6 extension header found in a chain.
public struct IPv6ExtensionHeader {
    /// The protocol number that named this header (0 hop-by-hop, 43 routing, 44 fragment, 60 destination, 51 AH).
    public let kind: UInt8
    /// Offset of this header within the datagram.
    public let offset: Int
    public let length: Int
    /// The next-header field inside it.
    public let nextHeader: UInt8
}

/// Iterates the extension headers of an already-parsed IPv6 datagram.
public struct IPv6ExtensionHeaders: Sequence, IteratorProtocol {
    let bytes: UnsafeRawBufferPointer
    var kind: UInt8
    var offset = 40
    let end: Int

    init(bytes: UnsafeRawBufferPointer, first: UInt8, end: Int) {
        self.bytes = bytes
        self.kind = first
        self.end = end
    }

    public mutating func next() -> IPv6ExtensionHeader? {
        guard offset + 8 <= end else { return nil }
        let length: Int
        switch kind {
        case IPProtocol.ipv6Fragment: length = 8
        case IPProtocol.ah: length = (Int(bytes[offset + 1]) + 2) * 4
        default: length = (Int(bytes[offset + 1]) + 1) * 8
        }
        guard offset + length <= end else { return nil }
        let header = IPv6ExtensionHeader(kind: kind, offset: offset, length: length, nextHeader: bytes[offset])
        kind = header.nextHeader
        offset += length
        return header
    }
}

/// TCP control bits.
public struct TCPFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var fin: TCPFlags { TCPFlags(rawValue: 0x01) }
    @inlinable public static var syn: TCPFlags { TCPFlags(rawValue: 0x02) }
    @inlinable public static var rst: TCPFlags { TCPFlags(rawValue: 0x04) }
    @inlinable public static var psh: TCPFlags { TCPFlags(rawValue: 0x08) }
    @inlinable public static var ack: TCPFlags { TCPFlags(rawValue: 0x10) }
    @inlinable public static var urg: TCPFlags { TCPFlags(rawValue: 0x20) }
    @inlinable public static var ece: TCPFlags { TCPFlags(rawValue: 0x40) }
    @inlinable public static var cwr: TCPFlags { TCPFlags(rawValue: 0x80) }

    /// tcpdump's letters: `S`, `S.`, `P.`, `F.`, `R`, `.` for a pure ACK.
    public var description: String {
        var text = ""
        if contains(.syn) { text += "S" }
        if contains(.fin) { text += "F" }
        if contains(.rst) { text += "R" }
        if contains(.psh) { text += "P" }
        if contains(.urg) { text += "U" }
        if contains(.ece) { text += "E" }
        if contains(.cwr) { text += "W" }
        if contains(.ack) { text += "." }
        return text.isEmpty ? "none" : text
    }
}

/// A TCP header; `bytes` spans the header and the segment's payload.
public struct TCPHeader {
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable public var sourcePort: UInt16 { bytes.be16(0) }
    @inlinable public var destinationPort: UInt16 { bytes.be16(2) }
    @inlinable public var sequenceNumber: UInt32 { bytes.be32(4) }
    @inlinable public var acknowledgmentNumber: UInt32 { bytes.be32(8) }
    /// Data offset in 32-bit words.
    @inlinable public var dataOffset: UInt8 { bytes[12] >> 4 }
    @inlinable public var headerLength: Int { Int(bytes[12] >> 4) * 4 }
    @inlinable public var flags: TCPFlags { TCPFlags(rawValue: bytes[13]) }
    /// The accurate-ECN / nonce bit that sits before CWR.
    @inlinable public var nonceSum: Bool { bytes[12] & 1 != 0 }
    @inlinable public var window: UInt16 { bytes.be16(14) }
    @inlinable public var checksum: UInt16 { bytes.be16(16) }
    @inlinable public var urgentPointer: UInt16 { bytes.be16(18) }
    @inlinable public var payload: UnsafeRawBufferPointer { bytes.slice(headerLength, bytes.count - headerLength) }
    /// The options, already validated by the parser.
    @inlinable public var options: TCPOptions { TCPOptions(bytes: bytes, start: 20, end: headerLength) }

    /// Sequence space the segment occupies: payload plus one for SYN and one for FIN.
    @inlinable @inline(__always) public var sequenceLength: UInt32 {
        var length = UInt32(truncatingIfNeeded: bytes.count - headerLength)
        if flags.contains(.syn) { length &+= 1 }
        if flags.contains(.fin) { length &+= 1 }
        return length
    }

    public var maximumSegmentSize: UInt16? {
        for case .maximumSegmentSize(let mss) in options { return mss }
        return nil
    }
    public var windowScale: UInt8? {
        for case .windowScale(let shift) in options { return shift }
        return nil
    }
    public var sackPermitted: Bool {
        for case .sackPermitted in options { return true }
        return false
    }
    public var timestamp: (value: UInt32, echoReply: UInt32)? {
        for case .timestamp(let value, let echo) in options { return (value, echo) }
        return nil
    }
    public var sackBlocks: SACKBlocks? {
        for case .sack(let blocks) in options { return blocks }
        return nil
    }
}

/// The SACK blocks of one SACK option: left and right edges, in the order sent.
public struct SACKBlocks: RandomAccessCollection {
    /// The TCP header bytes.
    public let bytes: UnsafeRawBufferPointer
    /// Offset of the first block's left edge within the TCP header.
    public let offset: Int
    public let count: Int

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { count }
    @inlinable public subscript(index: Int) -> (left: UInt32, right: UInt32) {
        (bytes.be32(offset + 8 * index), bytes.be32(offset + 8 * index + 4))
    }
}

/// One TCP option.
public enum TCPOption {
    case noOperation
    case maximumSegmentSize(UInt16)
    case windowScale(UInt8)
    case sackPermitted
    case sack(SACKBlocks)
    case timestamp(value: UInt32, echoReply: UInt32)
    /// Any other kind; `offset` is where its kind byte sits in the TCP header.
    case other(kind: UInt8, offset: Int, length: Int)
}

/// Iterates the options of a TCP header. Stops at end-of-list; stops silently on a malformed option (the parser
/// has already refused such headers, so that only happens on views built by hand).
public struct TCPOptions: Sequence, IteratorProtocol {
    public let bytes: UnsafeRawBufferPointer
    @usableFromInline var offset: Int
    @usableFromInline let end: Int

    @inlinable init(bytes: UnsafeRawBufferPointer, start: Int, end: Int) {
        self.bytes = bytes
        self.offset = start
        self.end = end
    }

    public mutating func next() -> TCPOption? {
        while offset < end {
            let kind = bytes[offset]
            switch kind {
            case 0:
                offset = end
                return nil
            case 1:
                offset += 1
                return .noOperation
            default:
                guard offset + 1 < end else {
                    offset = end
                    return nil
                }
                let length = Int(bytes[offset + 1])
                guard length >= 2, offset + length <= end, Self.lengthIsValid(kind: kind, length: length) else {
                    offset = end
                    return nil
                }
                let start = offset
                offset += length
                switch kind {
                case 2: return .maximumSegmentSize(bytes.be16(start + 2))
                case 3: return .windowScale(bytes[start + 2])
                case 4: return .sackPermitted
                case 5: return .sack(SACKBlocks(bytes: bytes, offset: start + 2, count: (length - 2) / 8))
                case 8: return .timestamp(value: bytes.be32(start + 2), echoReply: bytes.be32(start + 6))
                default: return .other(kind: kind, offset: start, length: length)
                }
            }
        }
        return nil
    }

    /// The lengths RFC 9293/7323/2018 allow for the kinds we interpret; any length ≥ 2 for the others.
    @inlinable static func lengthIsValid(kind: UInt8, length: Int) -> Bool {
        switch kind {
        case 2: length == 4
        case 3: length == 3
        case 4: length == 2
        case 5: length >= 10 && length <= 34 && (length - 2) % 8 == 0
        case 8: length == 10
        default: length >= 2
        }
    }

    /// Checks an option list for lengths of 0 or 1, lengths that overrun the header, and wrong fixed lengths.
    static func validate(_ b: UnsafeRawBufferPointer, from start: Int, to end: Int) throws(ParseError) {
        var i = start
        while i < end {
            let kind = b[i]
            if kind == 0 { return }
            if kind == 1 {
                i += 1
                continue
            }
            guard i + 1 < end else { throw .badTCPOption(kind: kind, length: 0, offset: i) }
            let length = Int(b[i + 1])
            guard length >= 2, i + length <= end, lengthIsValid(kind: kind, length: length) else {
                throw .badTCPOption(kind: kind, length: length, offset: i)
            }
            i += length
        }
    }
}

/// A UDP header; `bytes` spans the header and the datagram's payload.
public struct UDPHeader {
    public let bytes: UnsafeRawBufferPointer

    @inlinable public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable public var sourcePort: UInt16 { bytes.be16(0) }
    @inlinable public var destinationPort: UInt16 { bytes.be16(2) }
    @inlinable public var length: Int { Int(bytes.be16(4)) }
    @inlinable public var checksum: UInt16 { bytes.be16(6) }
    @inlinable public var payload: UnsafeRawBufferPointer { bytes.slice(8, bytes.count - 8) }
}
