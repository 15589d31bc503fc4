import ColoPacket

/// Ethernet II header fields. Defaults: the lab's client MAC to the replicas' MAC, no tags.
public struct EthernetSpec: Sendable {
    public var destination: MACAddress
    public var source: MACAddress
    /// Tags outermost first; use TPID 0x88A8 for a QinQ outer tag.
    public var vlanTags: [VLANTag]
    /// Replaces the EtherType the builder would pick from the network layer.
    public var etherTypeOverride: UInt16?

    public init(
        destination: MACAddress = MACAddress(0x52, 0x54, 0, 0, 0, 2),
        source: MACAddress = MACAddress(0x52, 0x54, 0, 0, 0, 1), vlanTags: [VLANTag] = [],
        etherTypeOverride: UInt16? = nil
    ) {
        self.destination = destination
        self.source = source
        self.vlanTags = vlanTags
        self.etherTypeOverride = etherTypeOverride
    }
}

/// IPv4 header fields; the `…Override` fields write deliberately wrong values.
public struct IPv4Spec: Sendable {
    public var source: IPv4Address
    public var destination: IPv4Address
    public var ttl: UInt8 = 64
    public var identification: UInt16 = 0x1234
    public var typeOfService: UInt8 = 0
    public var dontFragment = true
    public var moreFragments = false
    /// Fragment offset in bytes (a multiple of 8).
    public var fragmentOffset = 0
    /// Raw option bytes; padded with zeros to a multiple of 4.
    public var options: [UInt8] = []
    public var protocolOverride: UInt8?
    public var totalLengthOverride: Int?
    public var ihlOverride: UInt8?
    public var versionOverride: UInt8?
    public var corruptHeaderChecksum = false

    public init(source: IPv4Address = IPv4Address(10, 10, 0, 1), destination: IPv4Address = IPv4Address(10, 10, 0, 2)) {
        self.source = source
        self.destination = destination
    }
}

/// One IPv6 extension header to place between the fixed header and the upper layer.
public enum IPv6ExtensionSpec: Sendable {
    /// Option bytes (after next-header and length); padded to a multiple of 8 with PadN.
    case hopByHop([UInt8])
    case destinationOptions([UInt8])
    /// Routing header with type, segments left and type-specific data.
    case routing(type: UInt8, segmentsLeft: UInt8, data: [UInt8])
    /// Fragment header: offset in bytes (multiple of 8), more-fragments flag, identification.
    case fragment(offset: Int, more: Bool, identification: UInt32)
    /// Authentication header with SPI, sequence and ICV bytes (ICV length a multiple of 4).
    case authentication(spi: UInt32, sequence: UInt32, icv: [UInt8])
    /// Any header given whole; its first byte (next header) is filled in by the builder.
    case raw(kind: UInt8, bytes: [UInt8])

    var kind: UInt8 {
        switch self {
        case .hopByHop: IPProtocol.hopByHop
        case .destinationOptions: IPProtocol.ipv6DestinationOptions
        case .routing: IPProtocol.ipv6Routing
        case .fragment: IPProtocol.ipv6Fragment
        case .authentication: IPProtocol.ah
        case .raw(let kind, _): kind
        }
    }
}

/// IPv6 header fields.
public struct IPv6Spec: Sendable {
    public var source: IPv6Address
    public var destination: IPv6Address
    public var hopLimit: UInt8 = 64
    public var trafficClass: UInt8 = 0
    public var flowLabel: UInt32 = 0
    public var extensionHeaders: [IPv6ExtensionSpec] = []
    public var payloadLengthOverride: Int?
    public var nextHeaderOverride: UInt8?

    public init(
        source: IPv6Address = IPv6Address("fd00:c010::1") ?? IPv6Address(high: 0, low: 1),
        destination: IPv6Address = IPv6Address("fd00:c010::2") ?? IPv6Address(high: 0, low: 2)
    ) {
        self.source = source
        self.destination = destination
    }
}

/// One TCP option to write, in order.
public enum TCPOptionSpec: Sendable {
    case endOfList
    case noOperation
    case maximumSegmentSize(UInt16)
    case windowScale(UInt8)
    case sackPermitted
    case sack([SACKEdge])
    case timestamp(value: UInt32, echoReply: UInt32)
    /// Bytes written as given (for malformed options).
    case raw([UInt8])

    var bytes: [UInt8] {
        switch self {
        case .endOfList: [0]
        case .noOperation: [1]
        case .maximumSegmentSize(let mss): [2, 4] + be16(mss)
        case .windowScale(let shift): [3, 3, shift]
        case .sackPermitted: [4, 2]
        case .sack(let edges): [5, UInt8(2 + 8 * edges.count)] + edges.flatMap { be32($0.left) + be32($0.right) }
        case .timestamp(let value, let echo): [8, 10] + be32(value) + be32(echo)
        case .raw(let bytes): bytes
        }
    }
}

/// A SACK block's edges.
public struct SACKEdge: Sendable, Equatable {
    public var left: UInt32
    public var right: UInt32
    public init(left: UInt32, right: UInt32) {
        self.left = left
        self.right = right
    }
}

/// TCP header fields and payload.
public struct TCPSpec: Sendable {
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var sequenceNumber: UInt32
    public var acknowledgmentNumber: UInt32
    public var flags: TCPFlags
    public var window: UInt16 = 65535
    public var urgentPointer: UInt16 = 0
    public var options: [TCPOptionSpec] = []
    public var payload: [UInt8] = []
    /// Data offset to write instead of the real one (in 32-bit words).
    public var dataOffsetOverride: UInt8?
    public var corruptChecksum = false

    public init(
        sourcePort: UInt16 = 40000, destinationPort: UInt16 = 80, sequenceNumber: UInt32 = 1000,
        acknowledgmentNumber: UInt32 = 0, flags: TCPFlags = [.ack], options: [TCPOptionSpec] = [],
        payload: [UInt8] = []
    ) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.sequenceNumber = sequenceNumber
        self.acknowledgmentNumber = acknowledgmentNumber
        self.flags = flags
        self.options = options
        self.payload = payload
    }
}

/// UDP header fields and payload.
public struct UDPSpec: Sendable {
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var payload: [UInt8]
    public var lengthOverride: Int?
    /// Write 0 (IPv4: "no checksum").
    public var omitChecksum = false
    public var corruptChecksum = false

    public init(sourcePort: UInt16 = 5353, destinationPort: UInt16 = 53, payload: [UInt8] = []) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.payload = payload
    }
}

/// An ICMPv4 or ICMPv6 message: type, code, the 4 bytes after the checksum, and the body.
public struct ICMPSpec: Sendable {
    public var type: UInt8
    public var code: UInt8
    public var restOfHeader: UInt32
    public var body: [UInt8]
    public var corruptChecksum = false

    public init(type: UInt8, code: UInt8 = 0, restOfHeader: UInt32 = 0, body: [UInt8] = []) {
        self.type = type
        self.code = code
        self.restOfHeader = restOfHeader
        self.body = body
    }

    /// Echo request (v4 type 8, v6 type 128 — pass `type`), identifier and sequence in the rest of the header.
    public static func echo(type: UInt8 = 8, identifier: UInt16, sequence: UInt16, payload: [UInt8] = []) -> ICMPSpec {
        ICMPSpec(type: type, restOfHeader: UInt32(identifier) << 16 | UInt32(sequence), body: payload)
    }

    /// An error quoting `packet` (raw IP bytes, cut to `quoteLength` bytes when given).
    public static func error(
        type: UInt8, code: UInt8, quoting packet: [UInt8], quoteLength: Int? = nil, rest: UInt32 = 0
    )
        -> ICMPSpec
    {
        ICMPSpec(type: type, code: code, restOfHeader: rest, body: Array(packet.prefix(quoteLength ?? packet.count)))
    }

    /// Neighbour solicitation for `target`, with a source link-layer address option.
    public static func neighborSolicitation(target: IPv6Address, sourceMAC: MACAddress?) -> ICMPSpec {
        var body = target.bytes
        if let mac = sourceMAC { body += [1, 1] + mac.bytes }
        return ICMPSpec(type: 135, body: body)
    }

    /// Neighbour advertisement (solicited + override) for `target`, with a target link-layer address option.
    public static func neighborAdvertisement(target: IPv6Address, targetMAC: MACAddress?, router: Bool = false)
        -> ICMPSpec
    {
        var body = target.bytes
        if let mac = targetMAC { body += [2, 1] + mac.bytes }
        let flags: UInt32 = (router ? 0x8000_0000 : 0) | 0x6000_0000
        return ICMPSpec(type: 136, restOfHeader: flags, body: body)
    }
}

/// An ARP packet (Ethernet/IPv4 form unless raw bytes are given).
public struct ARPSpec: Sendable {
    public var operation: UInt16
    public var senderMAC: MACAddress
    public var senderIP: IPv4Address
    public var targetMAC: MACAddress
    public var targetIP: IPv4Address
    public var hardwareLengthOverride: UInt8?
    public var protocolLengthOverride: UInt8?

    public init(
        operation: UInt16 = 1, senderMAC: MACAddress = MACAddress(0x52, 0x54, 0, 0, 0, 1),
        senderIP: IPv4Address = IPv4Address(10, 10, 0, 1), targetMAC: MACAddress = .zero,
        targetIP: IPv4Address = IPv4Address(10, 10, 0, 2)
    ) {
        self.operation = operation
        self.senderMAC = senderMAC
        self.senderIP = senderIP
        self.targetMAC = targetMAC
        self.targetIP = targetIP
    }
}

/// The upper layer of an IP packet.
public enum TransportSpec: Sendable {
    case tcp(TCPSpec)
    case udp(UDPSpec)
    case icmp(ICMPSpec)
    /// Any protocol number with the bytes given as they are.
    case raw(protocolNumber: UInt8, bytes: [UInt8])

    var protocolNumber: UInt8 {
        switch self {
        case .tcp: IPProtocol.tcp
        case .udp: IPProtocol.udp
        case .icmp: 0  // filled in per family
        case .raw(let proto, _): proto
        }
    }
}

/// The network layer and everything above it.
public enum NetworkSpec: Sendable {
    case ipv4(IPv4Spec, TransportSpec)
    case ipv6(IPv6Spec, TransportSpec)
    case arp(ARPSpec)
    /// A payload after the EtherType, as given.
    case other(etherType: UInt16, bytes: [UInt8])
}

@inline(__always) func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }
@inline(__always) func be32(_ v: UInt32) -> [UInt8] {
    [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]
}
