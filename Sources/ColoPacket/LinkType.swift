/// How the first byte of a packet buffer is to be read: an Ethernet frame or a raw IP packet.
///
/// The raw values are the pcap LINKTYPE numbers, so a capture's link type maps straight onto this.
public enum LinkType: UInt32, Sendable, CaseIterable {
    /// Ethernet II, optionally with 802.1Q / 802.1ad tags (TAP devices, QEMU chardev streams).
    case ethernet = 1
    /// Raw IP, version taken from the first nibble (TUN devices, NFQUEUE).
    case rawIP = 101
    /// Raw IPv4 only.
    case rawIPv4 = 228
    /// Raw IPv6 only.
    case rawIPv6 = 229

    /// True when the buffer starts with an L2 header.
    @inlinable public var hasLinkHeader: Bool { self == .ethernet }
}
