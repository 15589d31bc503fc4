import ColoPacket
import ColoPacketBuilder
import Testing

/// Parses `bytes` and hands the packet to `body` while the buffer is alive.
@discardableResult
func withParsed<R>(
    _ bytes: [UInt8], linkType: LinkType = .ethernet, _ body: (Packet) throws -> R,
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> R {
    try bytes.withUnsafeBytes { raw in
        let packet = try Packet(raw, linkType: linkType)
        return try body(packet)
    }
}

/// Parses `bytes` expecting failure and returns the error.
func parseError(_ bytes: [UInt8], linkType: LinkType = .ethernet) -> ParseError? {
    bytes.withUnsafeBytes { raw -> ParseError? in
        do throws(ParseError) {
            _ = try PacketParser.parse(raw, linkType: linkType)
            return nil
        } catch {
            return error
        }
    }
}

let clientMAC = MACAddress(0x52, 0x54, 0, 0, 0, 1)
let replicaMAC = MACAddress(0x52, 0x54, 0, 0, 0, 2)
let client4 = IPv4Address(10, 10, 0, 1)
let replica4 = IPv4Address(10, 10, 0, 2)
let client6 = IPv6Address(high: 0xFD00_C010_0000_0000, low: 1)  // fd00:c010::1
let replica6 = IPv6Address(high: 0xFD00_C010_0000_0000, low: 2)  // fd00:c010::2

/// Reads every field of every header the packet has, so that a wrong layout traps in a debug build.
func touchEverything(_ packet: Packet) {
    var sink = 0
    if let eth = packet.ethernet { sink &+= Int(eth.source.value &+ eth.destination.value) &+ Int(eth.outerEtherType) }
    if let arp = packet.arp {
        sink &+= Int(arp.operation) &+ arp.senderHardwareAddress.count &+ arp.targetProtocolAddress.count
        sink &+= Int(arp.senderIPv4?.value ?? 0)
    }
    if let ip = packet.ipv4 {
        sink &+=
            Int(ip.identification) &+ ip.options.count &+ Int(ip.source.value) &+ (ip.isHeaderChecksumValid ? 1 : 0)
    }
    if let ip = packet.ipv6 {
        sink &+= Int(ip.flowLabel) &+ Int(truncatingIfNeeded: ip.source.low)
        for ext in ip.extensionHeaders(headerLength: packet.layout.ipHeaderLength) { sink &+= ext.length }
    }
    if let tcp = packet.tcp {
        sink &+= Int(tcp.sequenceNumber) &+ Int(tcp.window) &+ tcp.payload.count
        for option in tcp.options {
            if case .sack(let blocks) = option {
                for block in blocks { sink &+= Int(block.left) }
            }
        }
    }
    if let udp = packet.udp { sink &+= Int(udp.length) &+ udp.payload.count }
    if let icmp = packet.icmpv4 {
        sink &+= Int(icmp.identifier) &+ icmp.body.count
        if let inner = try? icmp.embeddedPacket() { sink &+= Int(inner.sourcePort) &+ Int(inner.icmpIdentifier) }
    }
    if let icmp = packet.icmpv6 {
        sink &+= Int(icmp.identifier) &+ icmp.body.count &+ Int(truncatingIfNeeded: icmp.targetAddress?.low ?? 0)
        for option in icmp.ndOptions { sink &+= option.bytes.count &+ Int(option.linkLayerAddress?.value ?? 0) }
        if let inner = try? icmp.embeddedPacket() { sink &+= Int(inner.destinationPort) }
    }
    sink &+= packet.payload.count
    if case .invalid = packet.transportChecksumStatus { sink &+= 1 }
    #expect(sink != Int.min)
}
