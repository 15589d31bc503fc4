import ColoFragments
import ColoPacket
import ColoPacketBuilder
import Testing

let second: UInt64 = 1_000_000_000

/// A reassembled datagram copied out of the reassembler, so tests can look at it after the next call.
struct Completed: Equatable {
    var bytes: [UInt8]
    var layout: PacketLayout
    var tokens: [UInt64]
    var mru: Int
    var zone: UInt16
    /// What a receiver would say of the reassembled upper-layer checksum.
    var checksum: ChecksumStatus
    var ipv4HeaderChecksumValid: Bool
}

/// A `FragmentResult` with every view copied.
enum Outcome: Equatable {
    case notAFragment
    case held
    case completed(Completed)
    case dropped(FragmentDropReason, [UInt64])

    init(_ result: FragmentResult) {
        switch result {
        case .notAFragment: self = .notAFragment
        case .held: self = .held
        case .completed(let datagram):
            let packet = Packet(bytes: datagram.bytes, layout: datagram.layout)
            self = .completed(
                Completed(
                    bytes: Array(datagram.bytes), layout: datagram.layout, tokens: Array(datagram.tokens),
                    mru: datagram.mru, zone: datagram.zone, checksum: packet.transportChecksumStatus,
                    ipv4HeaderChecksumValid: packet.isIPv4HeaderChecksumValid))
        case .dropped(let reason, let tokens): self = .dropped(reason, Array(tokens))
        }
    }

    var completed: Completed? {
        if case .completed(let c) = self { return c }
        return nil
    }
}

extension FragmentReassembler {
    /// Parses `packet` and submits it, copying whatever comes back.
    func offer(
        _ packet: [UInt8], linkType: LinkType = .rawIP, zone: UInt16 = 0, now: UInt64 = 0, token: UInt64
    ) throws -> Outcome {
        try packet.withUnsafeBytes { raw in
            let layout = try PacketParser.parse(raw, linkType: linkType)
            return Outcome(submit(raw, layout: layout, zone: zone, now: now, token: token))
        }
    }

    /// Submits fragments in the given order with tokens equal to their index in `fragments`; returns every outcome.
    func offerAll(
        _ fragments: [[UInt8]], order: [Int]? = nil, linkType: LinkType = .rawIP, zone: UInt16 = 0, now: UInt64 = 0
    ) throws -> [Outcome] {
        try (order ?? Array(fragments.indices)).map { index in
            try offer(fragments[index], linkType: linkType, zone: zone, now: now, token: UInt64(index))
        }
    }
}

/// Bytes that differ from one position to the next, so a misplaced fragment shows.
func pattern(_ count: Int, seed: UInt8 = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8 &+ Int(seed)) }
}

/// A raw IPv4 UDP datagram of `totalLength` bytes that may be fragmented (DF clear, as fragments' senders do).
func udp4(totalLength: Int = 3000, identification: UInt16 = 0x4242, options: [UInt8] = []) -> [UInt8] {
    var ip = IPv4Spec()
    ip.dontFragment = false
    ip.identification = identification
    ip.options = options
    let header = 20 + (options.count + 3) / 4 * 4
    return PacketBuilder.ipv4(ip, .udp(UDPSpec(payload: pattern(totalLength - header - 8))))
}

/// A raw IPv6 UDP datagram with the given extension headers and `payloadSize` bytes of UDP data.
func udp6(payloadSize: Int = 3000, extensions: [IPv6ExtensionSpec] = []) -> [UInt8] {
    var ip = IPv6Spec()
    ip.extensionHeaders = extensions
    return PacketBuilder.ipv6(ip, .udp(UDPSpec(payload: pattern(payloadSize, seed: 3))))
}

/// One IPv4 fragment of `packet` carrying data bytes `start..<end` (offsets after the IP header).
func fragment4(_ packet: [UInt8], _ start: Int, _ end: Int, more: Bool? = nil) -> [UInt8] {
    let headerLength = Int(packet[0] & 0x0F) * 4
    let dataCount = packet.count - headerLength
    var header = Array(packet[0..<headerLength])
    let total = headerLength + end - start
    header[2] = UInt8(total >> 8)
    header[3] = UInt8(total & 0xFF)
    let field = UInt16(start / 8) | ((more ?? (end < dataCount)) ? 0x2000 : 0)
    header[6] = UInt8(field >> 8)
    header[7] = UInt8(field & 0xFF)
    header[10] = 0
    header[11] = 0
    let checksum = header.withUnsafeBytes { Checksum.finish(Checksum.sum($0)) }
    header[10] = UInt8(checksum >> 8)
    header[11] = UInt8(checksum & 0xFF)
    return header + packet[(headerLength + start)..<(headerLength + end)]
}

/// IPv4 fragments of `packet` cut at the given data offsets (multiples of 8).
func split4(_ packet: [UInt8], at cuts: [Int]) -> [[UInt8]] {
    let dataCount = packet.count - Int(packet[0] & 0x0F) * 4
    let bounds = [0] + cuts + [dataCount]
    return (0..<(bounds.count - 1)).map { fragment4(packet, bounds[$0], bounds[$0 + 1]) }
}

/// Length of the IPv6 header plus every hop-by-hop, routing and destination-options header that follows it,
/// and the offset of the next-header byte that names what comes after them.
func unfragmentablePart(_ packet: [UInt8]) -> (length: Int, field: Int) {
    var field = 6
    var cursor = 40
    while [IPProtocol.hopByHop, IPProtocol.ipv6Routing, IPProtocol.ipv6DestinationOptions].contains(packet[field]) {
        field = cursor
        cursor += (Int(packet[cursor + 1]) + 1) * 8
    }
    return (cursor, field)
}

/// One IPv6 fragment of `packet` carrying bytes `start..<end` of its fragmentable part, with the fragment header
/// placed after the extension headers that every fragment repeats.
func fragment6(
    _ packet: [UInt8], _ start: Int, _ end: Int, more: Bool? = nil, identification: UInt32 = 0xC0C0_0001
) -> [UInt8] {
    let (length, field) = unfragmentablePart(packet)
    let dataCount = packet.count - length
    var header = Array(packet[0..<length])
    let next = header[field]
    header[field] = IPProtocol.ipv6Fragment
    let payloadLength = length - 40 + 8 + end - start
    header[4] = UInt8(payloadLength >> 8)
    header[5] = UInt8(payloadLength & 0xFF)
    let offsetField = UInt16(start) | ((more ?? (end < dataCount)) ? 1 : 0)
    let id = identification
    let fragmentHeader: [UInt8] = [
        next, 0, UInt8(offsetField >> 8), UInt8(offsetField & 0xFF),
        UInt8(id >> 24), UInt8(id >> 16 & 0xFF), UInt8(id >> 8 & 0xFF), UInt8(id & 0xFF),
    ]
    return header + fragmentHeader + packet[(length + start)..<(length + end)]
}

/// IPv6 fragments of `packet` carrying at most `maxData` bytes each (a multiple of 8).
func split6(_ packet: [UInt8], maxData: Int, identification: UInt32 = 0xC0C0_0001) -> [[UInt8]] {
    let dataCount = packet.count - unfragmentablePart(packet).length
    return stride(from: 0, to: dataCount, by: maxData).map {
        fragment6(packet, $0, min($0 + maxData, dataCount), identification: identification)
    }
}

/// A small deterministic generator, so that a failing flood can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
