/// The layer a parse error refers to.
public enum PacketLayer: String, Sendable {
    case ethernet, vlan, arp, ipv4, ipv4Options = "ipv4-options", ipv6, ipv6Extension = "ipv6-extension"
    case tcp, tcpOptions = "tcp-options", udp, icmp, icmpv6, ndOptions = "nd-options", embedded
}

/// Why a buffer is not a well-formed packet. Every case names the field and the values involved, so a
/// counter label or a debug log line can say exactly what was wrong.
public enum ParseError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Fewer bytes than the layer's header needs.
    case truncated(layer: PacketLayer, offset: Int, needed: Int, available: Int)
    /// The IP version nibble does not match the link type or is neither 4 nor 6.
    case badIPVersion(UInt8)
    /// IPv4 IHL below 5, or beyond the buffer.
    case badIPv4HeaderLength(ihl: UInt8, available: Int)
    /// IPv4 total length smaller than its header or larger than what was received.
    case badIPv4TotalLength(totalLength: Int, headerLength: Int, available: Int)
    /// An IPv4 option whose length is 0, 1 or runs past the header.
    case badIPv4Option(kind: UInt8, length: Int, offset: Int)
    /// IPv6 payload length larger than what was received (jumbograms are not supported).
    case badIPv6PayloadLength(payloadLength: Int, available: Int)
    /// More extension headers than the walk allows, or a chain longer than the packet.
    case extensionChainTooLong(count: Int)
    /// Hop-by-hop options anywhere but first, a second fragment header, or a header running past the payload.
    case badExtensionHeader(nextHeader: UInt8, offset: Int)
    /// TCP data offset below 5 or beyond the segment.
    case badTCPDataOffset(dataOffset: UInt8, available: Int)
    /// A TCP option whose length is 0, 1, wrong for its kind, or runs past the header.
    case badTCPOption(kind: UInt8, length: Int, offset: Int)
    /// UDP length below 8 or larger than the IP payload.
    case badUDPLength(length: Int, available: Int)
    /// A neighbour-discovery option with length 0 or running past the message.
    case badNDOption(type: UInt8, length: Int, offset: Int)
    /// ARP with hardware/protocol address lengths that do not fit the packet.
    case badARPLength(hardwareLength: UInt8, protocolLength: UInt8, available: Int)
    /// An ICMP message that is not an error was asked for its embedded packet.
    case notAnICMPError(type: UInt8)

    public var description: String {
        switch self {
        case .truncated(let layer, let offset, let needed, let available):
            "truncated \(layer.rawValue) header at byte \(offset): needs \(needed) bytes, \(available) present"
        case .badIPVersion(let v): "bad IP version \(v) (expected 4 or 6)"
        case .badIPv4HeaderLength(let ihl, let available):
            "bad IPv4 IHL \(ihl) (\(Int(ihl) * 4) bytes; minimum 20, \(available) present)"
        case .badIPv4TotalLength(let total, let header, let available):
            "bad IPv4 total length \(total) (header \(header) bytes, \(available) present)"
        case .badIPv4Option(let kind, let length, let offset):
            "bad IPv4 option kind \(kind) length \(length) at byte \(offset)"
        case .badIPv6PayloadLength(let length, let available):
            "bad IPv6 payload length \(length) (\(available) bytes present)"
        case .extensionChainTooLong(let count): "IPv6 extension header chain too long (\(count) headers)"
        case .badExtensionHeader(let next, let offset):
            "bad IPv6 extension header \(next) at byte \(offset)"
        case .badTCPDataOffset(let doff, let available):
            "bad TCP data offset \(doff) (\(Int(doff) * 4) bytes; minimum 20, \(available) present)"
        case .badTCPOption(let kind, let length, let offset):
            "bad TCP option kind \(kind) length \(length) at byte \(offset)"
        case .badUDPLength(let length, let available): "bad UDP length \(length) (\(available) bytes present)"
        case .badNDOption(let type, let length, let offset):
            "bad neighbour-discovery option type \(type) length \(length) at byte \(offset)"
        case .badARPLength(let hlen, let plen, let available):
            "bad ARP address lengths hlen=\(hlen) plen=\(plen) (\(available) bytes present)"
        case .notAnICMPError(let type): "ICMP type \(type) carries no embedded packet"
        }
    }

    /// A short stable label for counters (`colo_malformed_packets_total{reason="..."}`).
    public var reason: String {
        switch self {
        case .truncated(let layer, _, _, _): "truncated-\(layer.rawValue)"
        case .badIPVersion: "ip-version"
        case .badIPv4HeaderLength: "ipv4-ihl"
        case .badIPv4TotalLength: "ipv4-total-length"
        case .badIPv4Option: "ipv4-option"
        case .badIPv6PayloadLength: "ipv6-payload-length"
        case .extensionChainTooLong: "ipv6-extension-chain"
        case .badExtensionHeader: "ipv6-extension-header"
        case .badTCPDataOffset: "tcp-data-offset"
        case .badTCPOption: "tcp-option"
        case .badUDPLength: "udp-length"
        case .badNDOption: "nd-option"
        case .badARPLength: "arp-length"
        case .notAnICMPError: "icmp-not-error"
        }
    }
}
