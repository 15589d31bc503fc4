/// The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
///
/// `sum` returns the folded one's-complement sum of big-endian 16-bit words, *not* inverted: a header whose
/// checksum field is correct sums to 0xFFFF. Partial sums from several pieces (a pseudo-header, then the
/// segment) combine with `combine`, and `finish` turns a sum into the value to store in a checksum field.
public enum Checksum {
    /// Folded one's-complement sum of `bytes` as big-endian 16-bit words (an odd last byte is padded with zero).
    @inlinable
    public static func sum(_ bytes: UnsafeRawBufferPointer, initial: UInt32 = 0) -> UInt16 {
        // Sum host-order 64-bit words with end-around carry; one's-complement addition commutes with byte
        // swapping (RFC 1071 §2), so the result only needs converting to network order at the end.
        var acc: UInt64 = 0
        var i = 0
        let n = bytes.count
        while i + 32 <= n {
            acc = addCarry(acc, bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            acc = addCarry(acc, bytes.loadUnaligned(fromByteOffset: i + 8, as: UInt64.self))
            acc = addCarry(acc, bytes.loadUnaligned(fromByteOffset: i + 16, as: UInt64.self))
            acc = addCarry(acc, bytes.loadUnaligned(fromByteOffset: i + 24, as: UInt64.self))
            i += 32
        }
        while i + 8 <= n {
            acc = addCarry(acc, bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            i += 8
        }
        if i + 4 <= n {
            acc = addCarry(acc, UInt64(bytes.loadUnaligned(fromByteOffset: i, as: UInt32.self)))
            i += 4
        }
        if i + 2 <= n {
            acc = addCarry(acc, UInt64(bytes.loadUnaligned(fromByteOffset: i, as: UInt16.self)))
            i += 2
        }
        if i < n {
            // The odd byte is the high byte of a big-endian word: in memory order it comes first.
            acc = addCarry(acc, UInt64(UInt16(littleEndian: UInt16(bytes[i]))))
        }
        let host = fold64(acc)
        return combine(UInt16(bigEndian: host), UInt16(truncatingIfNeeded: fold32(initial)))
    }

    /// One's-complement addition of two folded sums.
    @inlinable @inline(__always)
    public static func combine(_ a: UInt16, _ b: UInt16) -> UInt16 {
        let s = UInt32(a) + UInt32(b)
        return UInt16(truncatingIfNeeded: (s & 0xFFFF) + (s >> 16))
    }

    /// The value to store in a checksum field for a computed sum.
    @inlinable @inline(__always)
    public static func finish(_ sum: UInt16) -> UInt16 { ~sum }

    /// Sum of the IPv4 pseudo-header (addresses, protocol, upper-layer length).
    @inlinable
    public static func pseudoHeaderSum(
        source: IPv4Address, destination: IPv4Address, protocol proto: UInt8, length: Int
    )
        -> UInt16
    {
        var s = UInt32(source.value >> 16) + UInt32(source.value & 0xFFFF)
        s += UInt32(destination.value >> 16) + UInt32(destination.value & 0xFFFF)
        s += UInt32(proto) + UInt32(truncatingIfNeeded: length & 0xFFFF) + UInt32(truncatingIfNeeded: length >> 16)
        return UInt16(truncatingIfNeeded: fold32(s))
    }

    /// Sum of the IPv6 pseudo-header (RFC 8200 §8.1: addresses, 32-bit length, next header).
    @inlinable
    public static func pseudoHeaderSum(
        source: IPv6Address, destination: IPv6Address, protocol proto: UInt8, length: Int
    )
        -> UInt16
    {
        var s: UInt64 = 0
        for word in [source.high, source.low, destination.high, destination.low] {
            s += (word >> 48) + (word >> 32 & 0xFFFF) + (word >> 16 & 0xFFFF) + (word & 0xFFFF)
        }
        s += UInt64(proto) + UInt64(length & 0xFFFF) + UInt64(length >> 16)
        return UInt16(truncatingIfNeeded: fold32(UInt32(truncatingIfNeeded: fold64(s))))
    }

    /// RFC 1624 equation 3: the checksum after a 16-bit field changed from `old` to `new`.
    @inlinable @inline(__always)
    public static func update(_ checksum: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        let s = UInt32(~checksum) + UInt32(~old) + UInt32(new)
        return ~UInt16(truncatingIfNeeded: fold32(s))
    }

    /// RFC 1624 equation 3 for a 32-bit field (a sequence or acknowledgment number).
    @inlinable @inline(__always)
    public static func update(_ checksum: UInt16, old: UInt32, new: UInt32) -> UInt16 {
        var s = UInt32(~checksum)
        s += UInt32(~UInt16(truncatingIfNeeded: old >> 16)) + UInt32(~UInt16(truncatingIfNeeded: old))
        s += (new >> 16) + (new & 0xFFFF)
        return ~UInt16(truncatingIfNeeded: fold32(s))
    }

    @inlinable @inline(__always)
    static func addCarry(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (s, o) = a.addingReportingOverflow(b)
        return s &+ (o ? 1 : 0)
    }

    @inlinable @inline(__always)
    static func fold64(_ v: UInt64) -> UInt16 {
        var s = (v & 0xFFFF_FFFF) + (v >> 32)
        s = (s & 0xFFFF_FFFF) + (s >> 32)
        return UInt16(truncatingIfNeeded: fold32(UInt32(truncatingIfNeeded: s)))
    }

    @inlinable @inline(__always)
    static func fold32(_ v: UInt32) -> UInt32 {
        var s = (v & 0xFFFF) + (v >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        return s
    }
}

/// What a receiver would conclude from a packet's upper-layer checksum.
public enum ChecksumStatus: Equatable, Sendable {
    case valid
    case invalid(stored: UInt16, expected: UInt16)
    /// UDP over IPv4 with checksum 0: the sender did not compute one.
    case absent
    /// Not checkable from this packet alone: a fragment, a quoted header, or a protocol without a checksum here.
    case notApplicable
}

extension Packet {
    /// The one's-complement sum of the pseudo-header for this packet's upper layer over `length` bytes.
    @inlinable
    func pseudoHeaderSum(length: Int) -> UInt16 {
        let proto = layout.transportProtocol
        if layout.network == .ipv4 {
            return Checksum.pseudoHeaderSum(
                source: IPv4Address(bytes, at: layout.networkOffset + 12),
                destination: IPv4Address(bytes, at: layout.networkOffset + 16), protocol: proto, length: length)
        }
        return Checksum.pseudoHeaderSum(
            source: IPv6Address(bytes, at: layout.networkOffset + 8),
            destination: IPv6Address(bytes, at: layout.networkOffset + 24), protocol: proto, length: length)
    }

    /// The checksum the upper-layer header should carry, or nil when it cannot be computed from this packet.
    public func expectedTransportChecksum() -> UInt16? {
        guard layout.isIP, !layout.isFragment, layout.transportHeaderComplete, layout.transportHeaderLength > 0
        else { return nil }
        let segment = transportBytes
        let field: Int
        let usesPseudoHeader: Bool
        switch layout.transportProtocol {
        case IPProtocol.tcp: (field, usesPseudoHeader) = (16, true)
        case IPProtocol.udp: (field, usesPseudoHeader) = (6, true)
        case IPProtocol.icmp: (field, usesPseudoHeader) = (2, false)
        case IPProtocol.icmpv6: (field, usesPseudoHeader) = (2, true)
        default: return nil
        }
        // Sum with the field's own contribution removed, so the stored value does not need zeroing.
        var sum = Checksum.sum(segment)
        sum = Checksum.combine(sum, ~segment.be16(field))
        if usesPseudoHeader { sum = Checksum.combine(sum, pseudoHeaderSum(length: segment.count)) }
        var value = Checksum.finish(sum)
        if layout.transportProtocol == IPProtocol.udp && value == 0 { value = 0xFFFF }
        return value
    }

    /// Checks the TCP, UDP, ICMP or ICMPv6 checksum as the receiving host would.
    public var transportChecksumStatus: ChecksumStatus {
        guard let expected = expectedTransportChecksum() else { return .notApplicable }
        let field =
            layout.transportProtocol == IPProtocol.udp ? 6 : (layout.transportProtocol == IPProtocol.tcp ? 16 : 2)
        let stored = bytes.be16(layout.transportOffset + field)
        if layout.transportProtocol == IPProtocol.udp && stored == 0 {
            return layout.network == .ipv4 ? .absent : .invalid(stored: 0, expected: expected)
        }
        // 0x0000 and 0xFFFF are the same one's-complement value.
        if stored == expected || (stored == 0 && expected == 0xFFFF) || (stored == 0xFFFF && expected == 0) {
            return .valid
        }
        return .invalid(stored: stored, expected: expected)
    }

    /// The IPv4 header checksum is right (true for non-IPv4 packets, which have none).
    public var isIPv4HeaderChecksumValid: Bool {
        guard let ip = ipv4 else { return true }
        return ip.isHeaderChecksumValid
    }
}

/// Writes correct checksums into a packet buffer (for builders, tools and re-fragmentation; the data path
/// updates incrementally instead).
public enum ChecksumWriter {
    /// Recomputes the IPv4 header checksum and the upper-layer checksum, where the packet allows.
    public static func fill(_ bytes: UnsafeMutableRawBufferPointer, layout: PacketLayout) {
        if layout.network == .ipv4 {
            let header = UnsafeMutableRawBufferPointer(
                rebasing: bytes[layout.networkOffset..<(layout.networkOffset + layout.ipHeaderLength)])
            header.setBE16(0, at: 10)
            header.setBE16(Checksum.finish(Checksum.sum(UnsafeRawBufferPointer(header))), at: 10)
        }
        let packet = Packet(bytes: UnsafeRawBufferPointer(bytes), layout: layout)
        guard let value = packet.expectedTransportChecksum() else { return }
        let field: Int
        switch layout.transportProtocol {
        case IPProtocol.tcp: field = 16
        case IPProtocol.udp: field = 6
        default: field = 2
        }
        bytes.setBE16(value, at: layout.transportOffset + field)
    }
}
