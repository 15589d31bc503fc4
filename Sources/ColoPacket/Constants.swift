/// EtherType values the parser knows.
public enum EtherType {
    public static let ipv4: UInt16 = 0x0800
    public static let arp: UInt16 = 0x0806
    public static let ipv6: UInt16 = 0x86DD
    /// 802.1Q customer tag.
    public static let vlan: UInt16 = 0x8100
    /// 802.1ad service tag (QinQ outer tag).
    public static let qinq: UInt16 = 0x88A8
    /// Pre-standard QinQ tag some switches still send.
    public static let qinqLegacy: UInt16 = 0x9100
}

/// IP protocol numbers (IPv4 protocol field, IPv6 next header).
public enum IPProtocol {
    public static let hopByHop: UInt8 = 0
    public static let icmp: UInt8 = 1
    public static let tcp: UInt8 = 6
    public static let udp: UInt8 = 17
    public static let ipv6Routing: UInt8 = 43
    public static let ipv6Fragment: UInt8 = 44
    public static let esp: UInt8 = 50
    public static let ah: UInt8 = 51
    public static let icmpv6: UInt8 = 58
    public static let noNextHeader: UInt8 = 59
    public static let ipv6DestinationOptions: UInt8 = 60
    public static let mobility: UInt8 = 135
    public static let hip: UInt8 = 139
    public static let shim6: UInt8 = 140

    /// Short lowercase name as conntrack and tshark print it.
    public static func name(_ proto: UInt8) -> String {
        switch proto {
        case icmp: "icmp"
        case tcp: "tcp"
        case udp: "udp"
        case icmpv6: "icmpv6"
        case esp: "esp"
        case ah: "ah"
        case 132: "sctp"
        case 136: "udplite"
        case 47: "gre"
        default: "unknown"
        }
    }
}
