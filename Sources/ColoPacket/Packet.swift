/// A parsed packet: the bytes (not owned) and where its headers are.
///
/// The bytes must stay valid and unchanged for as long as the `Packet` and the views it hands out are used.
/// Typed accessors return nil when the packet has no such header.
public struct Packet {
    public let bytes: UnsafeRawBufferPointer
    public let layout: PacketLayout

    /// Parses `bytes` as `linkType`; throws the first problem found.
    @inlinable public init(_ bytes: UnsafeRawBufferPointer, linkType: LinkType) throws(ParseError) {
        self.bytes = bytes
        self.layout = try PacketParser.parse(bytes, linkType: linkType)
    }

    /// Wraps bytes whose layout was found earlier (for instance stored beside a queued buffer).
    @inlinable public init(bytes: UnsafeRawBufferPointer, layout: PacketLayout) {
        self.bytes = bytes
        self.layout = layout
    }

    @inlinable public var ethernet: EthernetHeader? {
        layout.linkType == .ethernet ? EthernetHeader(bytes.slice(0, 14)) : nil
    }
    @inlinable public var arp: ARPHeader? { layout.network == .arp ? ARPHeader(networkBytes) : nil }
    @inlinable public var ipv4: IPv4Header? { layout.network == .ipv4 ? IPv4Header(networkBytes) : nil }
    @inlinable public var ipv6: IPv6Header? { layout.network == .ipv6 ? IPv6Header(networkBytes) : nil }

    @inlinable @inline(__always) public var tcp: TCPHeader? {
        guard layout.isTCP, layout.transportHeaderComplete else { return nil }
        return TCPHeader(transportBytes)
    }
    @inlinable public var udp: UDPHeader? {
        guard layout.isUDP, layout.transportHeaderComplete else { return nil }
        return UDPHeader(transportBytes)
    }
    @inlinable public var icmpv4: ICMPv4Header? {
        guard layout.network == .ipv4, layout.transportProtocol == IPProtocol.icmp, layout.transportHeaderLength > 0,
            layout.transportHeaderComplete
        else { return nil }
        return ICMPv4Header(transportBytes)
    }
    @inlinable public var icmpv6: ICMPv6Header? {
        guard layout.network == .ipv6, layout.transportProtocol == IPProtocol.icmpv6,
            layout.transportHeaderLength > 0, layout.transportHeaderComplete
        else { return nil }
        return ICMPv6Header(transportBytes)
    }

    /// From the IP/ARP header to the end of the datagram (Ethernet padding excluded).
    @inlinable public var networkBytes: UnsafeRawBufferPointer {
        bytes.slice(layout.networkOffset, layout.networkEnd - layout.networkOffset)
    }
    /// From the upper-layer header to the end of its payload.
    @inlinable public var transportBytes: UnsafeRawBufferPointer {
        bytes.slice(layout.transportOffset, layout.payloadEnd - layout.transportOffset)
    }
    /// The upper-layer payload (TCP/UDP data, ICMP body; fragment data for non-first fragments).
    @inlinable public var payload: UnsafeRawBufferPointer {
        bytes.slice(layout.payloadOffset, layout.payloadEnd - layout.payloadOffset)
    }

    /// Source and destination address, for either family.
    public var sourceAddress: IPAddress? {
        switch layout.network {
        case .ipv4: .v4(IPv4Address(bytes, at: layout.networkOffset + 12))
        case .ipv6: .v6(IPv6Address(bytes, at: layout.networkOffset + 8))
        default: nil
        }
    }
    public var destinationAddress: IPAddress? {
        switch layout.network {
        case .ipv4: .v4(IPv4Address(bytes, at: layout.networkOffset + 16))
        case .ipv6: .v6(IPv6Address(bytes, at: layout.networkOffset + 24))
        default: nil
        }
    }
}
