import ColoConntrack
import ColoPacket
import ColoPacketBuilder
import ColoStages
import Testing

let ms: UInt64 = 1_000_000

/// Drives a `ColoPipeline` with built frames and collects what comes out, as bytes.
final class PipelineHarness {
    let store = PacketStore(small: 4096, large: 16)
    let pipeline: ColoPipeline
    var now: UInt64 = 1_000_000 * ms
    var client: [[UInt8]] = []
    var primary: [[UInt8]] = []
    var secondary: [[UInt8]] = []

    init(_ configure: (inout CompareConfiguration) -> Void = { _ in }) {
        var compare = CompareConfiguration()
        configure(&compare)
        pipeline = ColoPipeline(store: store, compare: compare)
    }

    private func put(_ frame: [UInt8], _ source: PacketSource, linkType: LinkType) -> PacketRef {
        let ref = frame.withUnsafeBytes { store.store($0, linkType: linkType, source: source, receivedAt: now) }
        guard let ref else {
            Issue.record("packet store exhausted")
            return .none
        }
        return ref
    }

    func fromClient(_ frame: [UInt8], linkType: LinkType = .ethernet) {
        pipeline.fromClient(put(frame, .client, linkType: linkType), now: now)
        collect()
    }

    func fromPrimary(_ frame: [UInt8], linkType: LinkType = .ethernet) {
        pipeline.fromPrimary(put(frame, .primary, linkType: linkType), now: now)
        collect()
    }

    func fromSecondary(_ frame: [UInt8], linkType: LinkType = .ethernet) {
        pipeline.fromSecondary(put(frame, .secondary, linkType: linkType), now: now)
        collect()
    }

    func advance(_ nanoseconds: UInt64) {
        now += nanoseconds
        pipeline.tick(now: now)
        collect()
    }

    /// Moves output packets into byte arrays and returns their buffers to the store.
    func collect() {
        for (list, keyPath) in [
            (pipeline.toClient, \PipelineHarness.client), (pipeline.toPrimary, \.primary),
            (pipeline.toSecondary, \.secondary),
        ] {
            for ref in list {
                self[keyPath: keyPath].append(Array(store.frame(ref)))
                store.release(ref)
            }
        }
        pipeline.toClient.removeAll()
        pipeline.toPrimary.removeAll()
        pipeline.toSecondary.removeAll()
    }

    var events: [DivergenceEvent] { pipeline.comparer.events }
}

/// One TCP connection as the client, the primary and the secondary see it: each replica with its own ISN.
struct ReplicaConversation {
    var clientISN: UInt32 = 100_000
    var primaryISN: UInt32 = 7_000_000
    var secondaryISN: UInt32 = 4_000_000_000  // wraps past 2^32 within a few hundred MB
    var clientNext: UInt32
    var primaryNext: UInt32
    var secondaryNext: UInt32
    var v6 = false
    var vlan: UInt16?
    var clientPort: UInt16 = 40000
    var serverPort: UInt16 = 80

    init(v6: Bool = false, vlan: UInt16? = nil) {
        self.v6 = v6
        self.vlan = vlan
        clientNext = clientISN
        primaryNext = primaryISN
        secondaryNext = secondaryISN
    }

    var ethernet: EthernetSpec {
        EthernetSpec(vlanTags: vlan.map { [VLANTag(tpid: 0x8100, tci: $0)] } ?? [])
    }

    func frame(_ tcp: TCPSpec, fromClient: Bool) -> [UInt8] {
        if v6 {
            let a = IPv6Address("fd00:c010::1") ?? IPv6Address(high: 0, low: 1)
            let b = IPv6Address("fd00:c010::2") ?? IPv6Address(high: 0, low: 2)
            let ip = fromClient ? IPv6Spec(source: a, destination: b) : IPv6Spec(source: b, destination: a)
            return PacketBuilder.tcp6(tcp, ip: ip, ethernet: ethernet)
        }
        let a = IPv4Address(10, 10, 0, 1)
        let b = IPv4Address(10, 10, 0, 2)
        let ip = fromClient ? IPv4Spec(source: a, destination: b) : IPv4Spec(source: b, destination: a)
        return PacketBuilder.tcp4(tcp, ip: ip, ethernet: ethernet)
    }

    /// A client segment, acking the primary's bytes (what the client sees).
    mutating func client(_ flags: TCPFlags, _ payload: [UInt8] = [], options: [TCPOptionSpec] = []) -> [UInt8] {
        let spec = TCPSpec(
            sourcePort: clientPort, destinationPort: serverPort, sequenceNumber: clientNext,
            acknowledgmentNumber: flags.contains(.ack) ? primaryNext : 0, flags: flags, options: options,
            payload: payload)
        clientNext &+= UInt32(payload.count) + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0)
        return frame(spec, fromClient: true)
    }

    mutating func primary(_ flags: TCPFlags, _ payload: [UInt8] = [], options: [TCPOptionSpec] = []) -> [UInt8] {
        let spec = TCPSpec(
            sourcePort: serverPort, destinationPort: clientPort, sequenceNumber: primaryNext,
            acknowledgmentNumber: flags.contains(.ack) ? clientNext : 0, flags: flags, options: options,
            payload: payload)
        primaryNext &+= UInt32(payload.count) + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0)
        return frame(spec, fromClient: false)
    }

    mutating func secondary(_ flags: TCPFlags, _ payload: [UInt8] = [], options: [TCPOptionSpec] = []) -> [UInt8] {
        let spec = TCPSpec(
            sourcePort: serverPort, destinationPort: clientPort, sequenceNumber: secondaryNext,
            acknowledgmentNumber: flags.contains(.ack) ? clientNext : 0, flags: flags, options: options,
            payload: payload)
        secondaryNext &+= UInt32(payload.count) + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0)
        return frame(spec, fromClient: false)
    }

    /// SYN from the client, SYN|ACK from both replicas, the client's ACK.
    mutating func handshake(_ h: PipelineHarness) {
        let options: [TCPOptionSpec] = [.maximumSegmentSize(1460), .sackPermitted, .windowScale(7)]
        h.fromClient(client(.syn, options: options))
        h.fromPrimary(primary([.syn, .ack], options: options))
        h.fromSecondary(secondary([.syn, .ack], options: options))
        h.fromClient(client(.ack))
    }
}

/// Parsed view of an output frame.
func parsed(_ frame: [UInt8], linkType: LinkType = .ethernet) -> (
    layout: PacketLayout, seq: UInt32, ack: UInt32,
    flags: TCPFlags, payload: [UInt8], checksumValid: Bool, sack: [SACKEdge]
)? {
    frame.withUnsafeBytes { raw in
        guard let packet = try? Packet(raw, linkType: linkType), let tcp = packet.tcp else { return nil }
        let sack = tcp.sackBlocks.map { blocks in blocks.map { SACKEdge(left: $0.left, right: $0.right) } } ?? []
        return (
            packet.layout, tcp.sequenceNumber, tcp.acknowledgmentNumber, tcp.flags, Array(tcp.payload),
            packet.transportChecksumStatus == .valid, sack
        )
    }
}

func bytes(_ count: Int, seed: UInt8 = 1) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
}
