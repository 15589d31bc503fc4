#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A 48-bit Ethernet address, kept in the low bits of a `UInt64` so that it compares and hashes as one word.
public struct MACAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var value: UInt64

    @inlinable public init(value: UInt64) { self.value = value & 0xFFFF_FFFF_FFFF }

    @inlinable public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8, _ b5: UInt8) {
        value =
            UInt64(b0) << 40 | UInt64(b1) << 32 | UInt64(b2) << 24 | UInt64(b3) << 16 | UInt64(b4) << 8
            | UInt64(b5)
    }

    /// Reads six bytes at `offset`.
    @inlinable public init(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        value = UInt64(bytes.be16(offset)) << 32 | UInt64(bytes.be32(offset + 2))
    }

    /// Parses `52:54:00:12:34:56` (colons or dashes).
    public init?(_ text: some StringProtocol) {
        let parts = text.split(whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var v: UInt64 = 0
        for part in parts {
            guard part.count <= 2, let byte = UInt8(part, radix: 16) else { return nil }
            v = v << 8 | UInt64(byte)
        }
        value = v
    }

    public static let broadcast = MACAddress(value: 0xFFFF_FFFF_FFFF)
    public static let zero = MACAddress(value: 0)

    public var bytes: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: value >> (40 - 8 * UInt64($0))) } }
    public var isMulticast: Bool { (value >> 40) & 1 == 1 }

    public func write(to buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        buffer.setBE16(UInt16(truncatingIfNeeded: value >> 32), at: offset)
        buffer.setBE32(UInt32(truncatingIfNeeded: value), at: offset + 2)
    }

    public static func < (a: MACAddress, b: MACAddress) -> Bool { a.value < b.value }

    public var description: String {
        bytes.map { hex2($0) }.joined(separator: ":")
    }
}

/// An IPv4 address as the 32-bit number it is on the wire (10.0.0.1 is 0x0A000001).
public struct IPv4Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var value: UInt32

    @inlinable public init(value: UInt32) { self.value = value }

    @inlinable public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    @inlinable public init(_ bytes: UnsafeRawBufferPointer, at offset: Int) { value = bytes.be32(offset) }

    /// Parses dotted-quad text; nothing else (no shorthand forms, no leading zeros as octal).
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                let octet = UInt8(part)
            else { return nil }
            v = v << 8 | UInt32(octet)
        }
        value = v
    }

    public var bytes: [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }

    public static func < (a: IPv4Address, b: IPv4Address) -> Bool { a.value < b.value }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
    }
}

/// An IPv6 address as two big-endian 64-bit halves, so comparisons and hashing are two word operations.
public struct IPv6Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    @inlinable public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    @inlinable public init(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        high = bytes.be64(offset)
        low = bytes.be64(offset + 8)
    }

    /// Parses any textual form inet_pton accepts (`fd00::1`, `::ffff:10.0.0.1`, ...).
    public init?(_ text: String) {
        var storage = in6_addr()
        let ok = text.withCString { inet_pton(AF_INET6, $0, &storage) } == 1
        guard ok else { return nil }
        let parsed = withUnsafeBytes(of: &storage) { IPv6Address($0, at: 0) }
        self = parsed
    }

    public var bytes: [UInt8] {
        (0..<16).map { i in UInt8(truncatingIfNeeded: (i < 8 ? high : low) >> (56 - 8 * UInt64(i % 8))) }
    }

    public func write(to buffer: UnsafeMutableRawBufferPointer, at offset: Int) {
        buffer.storeBytes(of: high.bigEndian, toByteOffset: offset, as: UInt64.self)
        buffer.storeBytes(of: low.bigEndian, toByteOffset: offset + 8, as: UInt64.self)
    }

    public static func < (a: IPv6Address, b: IPv6Address) -> Bool { (a.high, a.low) < (b.high, b.low) }

    /// RFC 5952 text (what `ip` and tshark print).
    public var description: String {
        var storage = in6_addr()
        withUnsafeMutableBytes(of: &storage) { raw in
            raw.storeBytes(of: high.bigEndian, toByteOffset: 0, as: UInt64.self)
            raw.storeBytes(of: low.bigEndian, toByteOffset: 8, as: UInt64.self)
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &storage, &text, socklen_t(text.count)) != nil else { return "?" }
        return String(decoding: text.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Either family, for places that print or configure addresses. Hot paths use the concrete types.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    public init?(_ text: String) {
        if let v4 = IPv4Address(text) {
            self = .v4(v4)
        } else if let v6 = IPv6Address(text) {
            self = .v6(v6)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .v4(let a): a.description
        case .v6(let a): a.description
        }
    }
}

@usableFromInline
func hex2(_ byte: UInt8) -> String {
    let digits: [Character] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f"]
    return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
}
