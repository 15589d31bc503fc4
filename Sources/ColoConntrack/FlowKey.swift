import ColoPacket

/// The tuple a connection is found by: zone, family, addresses, protocol, ports (or ICMP id and type).
///
/// IPv4 addresses sit in the low word with a zero high word, so both families share one layout and one hash.
/// For ICMP queries `sourcePort` is the identifier and `destinationPort` the message type, so that a request and
/// its reply are each other's `reversed()`.
public struct FlowKey: Hashable, Sendable, CustomStringConvertible {
    public var sourceHigh: UInt64
    public var sourceLow: UInt64
    public var destinationHigh: UInt64
    public var destinationLow: UInt64
    /// Ports, zone, protocol and family in one word: `sourcePort << 48 | destinationPort << 32 | zone << 16 |
    /// protocolNumber << 8 | family`. Kept as one stored word so a key is built, hashed and compared with whole
    /// 8-byte stores and loads: five narrow fields written one by one and then read back as a word (by the hash
    /// and the comparison) stalled store forwarding on every lookup.
    @usableFromInline var tail: UInt64

    @inlinable public var sourcePort: UInt16 {
        get { UInt16(truncatingIfNeeded: tail >> 48) }
        set { tail = tail & 0x0000_FFFF_FFFF_FFFF | UInt64(newValue) << 48 }
    }
    @inlinable public var destinationPort: UInt16 {
        get { UInt16(truncatingIfNeeded: tail >> 32) }
        set { tail = tail & 0xFFFF_0000_FFFF_FFFF | UInt64(newValue) << 32 }
    }
    @inlinable public var zone: UInt16 {
        get { UInt16(truncatingIfNeeded: tail >> 16) }
        set { tail = tail & 0xFFFF_FFFF_0000_FFFF | UInt64(newValue) << 16 }
    }
    @inlinable public var protocolNumber: UInt8 {
        get { UInt8(truncatingIfNeeded: tail >> 8) }
        set { tail = tail & 0xFFFF_FFFF_FFFF_00FF | UInt64(newValue) << 8 }
    }
    /// 4 or 6.
    @inlinable public var family: UInt8 {
        get { UInt8(truncatingIfNeeded: tail) }
        set { tail = tail & 0xFFFF_FFFF_FFFF_FF00 | UInt64(newValue) }
    }

    @inlinable static func packTail(
        sourcePort: UInt16, destinationPort: UInt16, zone: UInt16, protocolNumber: UInt8, family: UInt8
    ) -> UInt64 {
        UInt64(sourcePort) << 48 | UInt64(destinationPort) << 32 | UInt64(zone) << 16 | UInt64(protocolNumber) << 8
            | UInt64(family)
    }

    @inlinable public init(
        sourceHigh: UInt64 = 0, sourceLow: UInt64, destinationHigh: UInt64 = 0, destinationLow: UInt64,
        sourcePort: UInt16, destinationPort: UInt16, zone: UInt16, protocolNumber: UInt8, family: UInt8
    ) {
        self.sourceHigh = sourceHigh
        self.sourceLow = sourceLow
        self.destinationHigh = destinationHigh
        self.destinationLow = destinationLow
        self.tail = Self.packTail(
            sourcePort: sourcePort, destinationPort: destinationPort, zone: zone, protocolNumber: protocolNumber,
            family: family)
    }

    @inlinable init(
        sourceHigh: UInt64, sourceLow: UInt64, destinationHigh: UInt64, destinationLow: UInt64, tail: UInt64
    ) {
        self.sourceHigh = sourceHigh
        self.sourceLow = sourceLow
        self.destinationHigh = destinationHigh
        self.destinationLow = destinationLow
        self.tail = tail
    }

    /// The key of the same connection seen from the other end.
    @inlinable public func reversed() -> FlowKey {
        var r = self
        r.sourceHigh = destinationHigh
        r.sourceLow = destinationLow
        r.destinationHigh = sourceHigh
        r.destinationLow = sourceLow
        if isICMP {
            r.destinationPort = UInt16(
                FlowKey.counterpartICMPType(UInt8(truncatingIfNeeded: destinationPort), v6: family == 6))
        } else {
            r.sourcePort = destinationPort
            r.destinationPort = sourcePort
        }
        return r
    }

    @inlinable public var isICMP: Bool {
        (family == 4 && protocolNumber == IPProtocol.icmp) || (family == 6 && protocolNumber == IPProtocol.icmpv6)
    }

    /// Request ↔ reply type of an ICMP query; other types map to themselves.
    @inlinable public static func counterpartICMPType(_ type: UInt8, v6: Bool) -> UInt8 {
        if v6 {
            switch type {
            case 128: return 129
            case 129: return 128
            default: return type
            }
        }
        switch type {
        case 8: return 0
        case 0: return 8
        case 13: return 14
        case 14: return 13
        case 15: return 16
        case 16: return 15
        case 17: return 18
        case 18: return 17
        default: return type
        }
    }

    public var sourceAddress: IPAddress {
        family == 4
            ? .v4(IPv4Address(value: UInt32(truncatingIfNeeded: sourceLow)))
            : .v6(IPv6Address(high: sourceHigh, low: sourceLow))
    }
    public var destinationAddress: IPAddress {
        family == 4
            ? .v4(IPv4Address(value: UInt32(truncatingIfNeeded: destinationLow)))
            : .v6(IPv6Address(high: destinationHigh, low: destinationLow))
    }

    /// Four words instead of nine fields: `Hasher` costs per `combine`, and the fields pack losslessly.
    @inlinable public func hash(into hasher: inout Hasher) {
        hasher.combine(sourceLow)
        hasher.combine(destinationLow)
        hasher.combine(sourceHigh &+ destinationHigh &* 0x9E37_79B9_7F4A_7C15)
        hasher.combine(tail)
    }

    @inlinable public static func == (a: FlowKey, b: FlowKey) -> Bool {
        a.sourceLow == b.sourceLow && a.destinationLow == b.destinationLow && a.tail == b.tail
            && a.sourceHigh == b.sourceHigh && a.destinationHigh == b.destinationHigh
    }

    /// A fast, seeded hash for the open-addressing table (SipHash via `Hasher` costs more than the lookup).
    @inlinable @inline(__always) func tableHash(seed: UInt64) -> UInt64 {
        let ports = tail
        var h = mix(sourceLow ^ seed, destinationLow ^ 0x9E37_79B9_7F4A_7C15)
        h ^= mix(sourceHigh ^ 0xC2B2_AE3D_27D4_EB4F, destinationHigh ^ seed)
        h ^= mix(ports ^ 0x1656_67B1_9E37_79F9, h ^ 0x27D4_EB2F_1656_67C5)
        return h
    }

    public var description: String {
        let proto = IPProtocol.name(protocolNumber)
        if isICMP {
            return "\(proto) \(sourceAddress) > \(destinationAddress) type=\(destinationPort) id=\(sourcePort)"
        }
        return "\(proto) \(sourceAddress):\(sourcePort) > \(destinationAddress):\(destinationPort) zone=\(zone)"
    }
}

@inlinable @inline(__always)
func mix(_ a: UInt64, _ b: UInt64) -> UInt64 {
    let product = a.multipliedFullWidth(by: b)
    return product.high ^ product.low
}

extension FlowKey {
    /// The key of an IP packet's own flow. ICMP errors get the key of the error message itself (their
    /// relation to a connection is found through the quoted packet instead).
    /// Transparent (inlined even where `@inline(__always)` was not honoured): returned through memory, the key
    /// was stored with 8-byte writes and read back by the caller with 16-byte loads, which store forwarding
    /// cannot serve.
    @_transparent
    public init(packet: Packet, zone: UInt16) {
        let b = packet.bytes
        let n = packet.layout.networkOffset
        let proto = packet.layout.transportProtocol
        // Built in registers and stored once (see `tail`).
        if packet.layout.network == .ipv4 {
            let ports = Self.ports(
                b, transportOffset: packet.layout.transportOffset, available: packet.layout.transportHeaderLength,
                protocolNumber: proto, family: 4)
            self.init(
                sourceHigh: 0, sourceLow: UInt64(b.loadUnaligned(fromByteOffset: n + 12, as: UInt32.self).bigEndian),
                destinationHigh: 0,
                destinationLow: UInt64(b.loadUnaligned(fromByteOffset: n + 16, as: UInt32.self).bigEndian),
                tail: ports | UInt64(zone) << 16 | UInt64(proto) << 8 | 4)
        } else {
            let ports = Self.ports(
                b, transportOffset: packet.layout.transportOffset, available: packet.layout.transportHeaderLength,
                protocolNumber: proto, family: 6)
            self.init(
                sourceHigh: b.loadUnaligned(fromByteOffset: n + 8, as: UInt64.self).bigEndian,
                sourceLow: b.loadUnaligned(fromByteOffset: n + 16, as: UInt64.self).bigEndian,
                destinationHigh: b.loadUnaligned(fromByteOffset: n + 24, as: UInt64.self).bigEndian,
                destinationLow: b.loadUnaligned(fromByteOffset: n + 32, as: UInt64.self).bigEndian,
                tail: ports | UInt64(zone) << 16 | UInt64(proto) << 8 | 6)
        }
    }

    /// The key of the packet quoted by an ICMP error.
    public init(embedded: EmbeddedPacket, zone: UInt16) {
        let b = embedded.bytes
        if embedded.layout.network == .ipv4 {
            self.init(
                sourceLow: UInt64(b.be32(12)), destinationLow: UInt64(b.be32(16)), sourcePort: 0, destinationPort: 0,
                zone: zone, protocolNumber: embedded.layout.transportProtocol, family: 4)
        } else {
            self.init(
                sourceHigh: b.be64(8), sourceLow: b.be64(16), destinationHigh: b.be64(24), destinationLow: b.be64(32),
                sourcePort: 0, destinationPort: 0, zone: zone, protocolNumber: embedded.layout.transportProtocol,
                family: 6)
        }
        setPorts(b, transportOffset: embedded.layout.transportOffset, available: embedded.layout.transportHeaderLength)
    }

    @inlinable
    mutating func setPorts(_ b: UnsafeRawBufferPointer, transportOffset t: Int, available: Int) {
        tail =
            tail & 0x0000_0000_FFFF_FFFF
            | Self.ports(b, transportOffset: t, available: available, protocolNumber: protocolNumber, family: family)
    }

    /// The two port fields of `tail` (already shifted into place): ports for port protocols, identifier and type
    /// for ICMP queries, type alone for other ICMP messages, zero otherwise.
    @inlinable @inline(__always)
    static func ports(
        _ b: UnsafeRawBufferPointer, transportOffset t: Int, available: Int, protocolNumber: UInt8, family: UInt8
    ) -> UInt64 {
        guard available >= 8 else { return 0 }
        switch protocolNumber {
        case IPProtocol.tcp, IPProtocol.udp, 132, 136, 33:  // TCP, UDP, SCTP, UDP-Lite, DCCP: ports first
            // Source and destination port as one big-endian word: source in the high half.
            return UInt64(UInt32(bigEndian: b.loadUnaligned(fromByteOffset: t, as: UInt32.self))) << 32
        case IPProtocol.icmp where family == 4, IPProtocol.icmpv6 where family == 6:
            let type = b[t]
            let isQuery = family == 4 ? ICMPv4Header.isQuery(type: type) : (type == 128 || type == 129)
            var word = UInt64(type) << 32
            if isQuery {
                word |= UInt64(UInt16(bigEndian: b.loadUnaligned(fromByteOffset: t + 4, as: UInt16.self))) << 48
            }
            return word
        default:
            return 0
        }
    }
}

extension UnsafeRawBufferPointer {
    @inlinable func be32(_ o: Int) -> UInt32 { UInt32(bigEndian: loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
    @inlinable func be64(_ o: Int) -> UInt64 { UInt64(bigEndian: loadUnaligned(fromByteOffset: o, as: UInt64.self)) }
}
