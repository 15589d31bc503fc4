/// What sits at the network layer of a packet.
public enum NetworkKind: UInt8, Sendable {
    case none, ipv4, ipv6, arp, other
}

/// One 802.1Q / 802.1ad tag.
public struct VLANTag: Equatable, Sendable {
    /// The tag protocol identifier: 0x8100 (802.1Q), 0x88A8 (802.1ad) or 0x9100.
    public var tpid: UInt16
    /// Priority (3 bits), drop-eligible (1 bit), VLAN id (12 bits).
    public var tci: UInt16

    @inlinable public init(tpid: UInt16 = 0, tci: UInt16 = 0) {
        self.tpid = tpid
        self.tci = tci
    }

    @inlinable public var vlanID: UInt16 { tci & 0x0FFF }
    @inlinable public var priority: UInt8 { UInt8(tci >> 13) }
    @inlinable public var dropEligible: Bool { tci & 0x1000 != 0 }
}

/// Where each header of a packet starts and ends, found once by `PacketParser` and then shared by every stage.
///
/// It holds offsets only (no pointers), so it is a plain value: it can be stored next to a packet buffer, copied
/// into batches and compared in tests. Offsets are from the start of the buffer that was parsed.
public struct PacketLayout: Equatable, Sendable {
    public var linkType: LinkType = .ethernet
    /// Number of VLAN tags (0, 1 or 2); `outerVLAN` is the first on the wire.
    public var vlanCount: Int = 0
    public var outerVLAN = VLANTag()
    public var innerVLAN = VLANTag()
    /// EtherType after any VLAN tags (for raw IP links, 0x0800 or 0x86DD from the version nibble).
    public var etherType: UInt16 = 0
    public var network: NetworkKind = .none
    /// Start of the IP or ARP header.
    public var networkOffset: Int = 0
    /// End of the IP datagram as its length fields say (Ethernet padding lies beyond it).
    public var networkEnd: Int = 0
    /// IPv4: IHL × 4. IPv6: 40 plus the extension headers before the upper-layer header.
    public var ipHeaderLength: Int = 0
    /// The upper-layer protocol after all extension headers (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    public var transportProtocol: UInt8 = 0
    /// Start of the upper-layer header (or of the fragment data in a non-first fragment).
    public var transportOffset: Int = 0
    /// Bytes of upper-layer header parsed; 0 when there is none to parse (non-first fragment, unknown protocol).
    public var transportHeaderLength: Int = 0
    /// True when the whole upper-layer header was present and checked (false in ICMP-embedded packets, which
    /// carry only its first 8 bytes).
    public var transportHeaderComplete: Bool = false
    /// Start and end of the upper-layer payload (TCP/UDP data, ICMP body after the 8-byte header).
    public var payloadOffset: Int = 0
    public var payloadEnd: Int = 0
    /// IP fragmentation: set for every fragment, first and last included.
    public var isFragment: Bool = false
    /// Offset of this fragment's data in the original datagram, in bytes.
    public var fragmentOffset: Int = 0
    public var moreFragments: Bool = false
    /// IPv4 identification (16 bits) or IPv6 fragment identification (32 bits).
    public var fragmentID: UInt32 = 0
    /// IPv6: where the fragment extension header starts (0 when there is none).
    public var fragmentHeaderOffset: Int = 0
    /// IPv6: how many extension headers were walked.
    public var extensionHeaderCount: Int = 0
    /// Only for packets embedded in ICMP errors: the datagram was cut short of its length fields.
    public var isTruncated: Bool = false

    @inlinable public init() {}

    @inlinable public var payloadLength: Int { payloadEnd - payloadOffset }
    @inlinable public var isIP: Bool { network == .ipv4 || network == .ipv6 }
    @inlinable public var isTCP: Bool { isIP && transportProtocol == IPProtocol.tcp && transportHeaderLength > 0 }
    @inlinable public var isUDP: Bool { isIP && transportProtocol == IPProtocol.udp && transportHeaderLength > 0 }
    /// The first fragment, or an unfragmented datagram: the one that carries the upper-layer header.
    @inlinable public var isFirstFragment: Bool { fragmentOffset == 0 }
    /// Length of the IP datagram (header included).
    @inlinable public var ipDatagramLength: Int { networkEnd - networkOffset }
    /// Length of the L2 header including VLAN tags (0 for raw IP).
    @inlinable public var linkHeaderLength: Int { networkOffset }
}
