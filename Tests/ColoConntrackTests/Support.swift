import ColoConntrack
import ColoPacket
import ColoPacketBuilder
import Testing

let second: UInt64 = 1_000_000_000

/// Tracks built frames and reports states as OVS prints them.
final class Harness {
    let tracker: ConnectionTracker
    var now: UInt64 = 1_000 * second
    var events: [String] = []

    init(_ configure: (inout ConntrackConfiguration) -> Void = { _ in }) {
        var configuration = ConntrackConfiguration()
        configure(&configuration)
        tracker = ConnectionTracker(configuration: configuration)
        tracker.eventHandler = { [unowned self] kind, entry, now in
            self.events.append(ConntrackFormatter.event(kind, entry, now: now))
        }
    }

    @discardableResult
    func track(_ frame: [UInt8], zone: UInt16 = 0, commit: Bool = true, linkType: LinkType = .ethernet) -> TrackResult {
        frame.withUnsafeBytes { raw in
            guard let packet = try? Packet(raw, linkType: linkType) else {
                Issue.record("test frame does not parse")
                return TrackResult.untracked(zone: zone)
            }
            return tracker.track(packet, zone: zone, commit: commit, now: now)
        }
    }

    func state(_ frame: [UInt8], zone: UInt16 = 0, commit: Bool = true) -> String {
        track(frame, zone: zone, commit: commit).state.description
    }

    func advance(seconds: UInt64) { now += seconds * second }

    func entries() -> [ConnectionEntry] {
        var list: [ConnectionEntry] = []
        tracker.forEachEntry { _, entry in list.append(entry) }
        return list
    }
}

/// A TCP conversation between a client and a server that keeps both sides' sequence numbers right.
struct Conversation {
    var clientISN: UInt32 = 1_000_000
    var serverISN: UInt32 = 3_000_000_000
    var clientNext: UInt32
    var serverNext: UInt32
    var clientPort: UInt16 = 40000
    var serverPort: UInt16 = 80
    var v6 = false
    var client4 = IPv4Address(10, 10, 0, 1)
    var server4 = IPv4Address(10, 10, 0, 2)
    var client6 = IPv6Address(high: 0xFD00_C010_0000_0000, low: 1)  // fd00:c010::1
    var server6 = IPv6Address(high: 0xFD00_C010_0000_0000, low: 2)  // fd00:c010::2
    var window: UInt16 = 64240

    init(v6: Bool = false) {
        self.v6 = v6
        clientNext = clientISN
        serverNext = serverISN
    }

    private func frame(_ tcp: TCPSpec, fromClient: Bool) -> [UInt8] {
        if v6 {
            let ip =
                fromClient
                ? IPv6Spec(source: client6, destination: server6) : IPv6Spec(source: server6, destination: client6)
            return PacketBuilder.tcp6(tcp, ip: ip)
        }
        let ip =
            fromClient
            ? IPv4Spec(source: client4, destination: server4) : IPv4Spec(source: server4, destination: client4)
        return PacketBuilder.tcp4(tcp, ip: ip)
    }

    /// A client segment; SYN and FIN and payload advance the client's sequence.
    mutating func client(_ flags: TCPFlags, _ payload: [UInt8] = [], options: [TCPOptionSpec] = []) -> [UInt8] {
        var spec = TCPSpec(
            sourcePort: clientPort, destinationPort: serverPort, sequenceNumber: clientNext,
            acknowledgmentNumber: flags.contains(.ack) ? serverNext : 0, flags: flags, options: options,
            payload: payload)
        spec.window = window
        clientNext &+= UInt32(payload.count) + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0)
        return frame(spec, fromClient: true)
    }

    mutating func server(_ flags: TCPFlags, _ payload: [UInt8] = [], options: [TCPOptionSpec] = []) -> [UInt8] {
        var spec = TCPSpec(
            sourcePort: serverPort, destinationPort: clientPort, sequenceNumber: serverNext,
            acknowledgmentNumber: flags.contains(.ack) ? clientNext : 0, flags: flags, options: options,
            payload: payload)
        spec.window = window
        serverNext &+= UInt32(payload.count) + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0)
        return frame(spec, fromClient: false)
    }

    /// SYN, SYN|ACK, ACK with window scaling and SACK on both sides.
    mutating func handshake(_ h: Harness) -> [String] {
        let options: [TCPOptionSpec] = [.maximumSegmentSize(1460), .sackPermitted, .windowScale(7)]
        return [
            h.state(client(.syn, options: options)), h.state(server([.syn, .ack], options: options)),
            h.state(client(.ack)),
        ]
    }
}

func udp4(from: IPv4Address, to: IPv4Address, sport: UInt16, dport: UInt16, payload: [UInt8] = [1]) -> [UInt8] {
    PacketBuilder.build(
        .ipv4(
            IPv4Spec(source: from, destination: to),
            .udp(UDPSpec(sourcePort: sport, destinationPort: dport, payload: payload))))
}

let clientIP = IPv4Address(10, 10, 0, 1)
let serverIP = IPv4Address(10, 10, 0, 2)
let routerIP = IPv4Address(10, 10, 0, 254)
