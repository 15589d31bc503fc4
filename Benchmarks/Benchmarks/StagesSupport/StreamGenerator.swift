import ColoConntrack
import ColoPacket
import ColoPacketBuilder
import ColoStages

// Rewriter + compare on a generated stream: 64 connections, each replica sending the same bytes with its own
// ISN. Shared by StagesBenchmarks and the ConntrackProfile loop.

public let connectionCount = 64

/// One connection's templates and running sequence numbers. The template bytes are in memory of their own
/// (not arrays): reading an array out of the connection list retained and released it on every packet, work
/// no port does (a port reads straight from its device into the store).
public struct GeneratedConnection {
    var primaryFrame: UnsafeMutableRawBufferPointer
    var secondaryFrame: UnsafeMutableRawBufferPointer
    var primarySeq: UInt32
    var secondarySeq: UInt32
    /// Where the TCP header starts in both templates.
    let transportOffset: Int
}

public final class StreamGenerator {
    public let store = PacketStore(small: 8192, large: 16)
    public let pipeline: ColoPipeline
    /// `connectionCount` of them. Unchecked and behind a pointer: the harness's own per-packet reads of its
    /// templates are not what is measured.
    let connections: UnsafeMutablePointer<GeneratedConnection>
    public let payloadSize: Int

    public init(payloadSize: Int) {
        self.payloadSize = payloadSize
        pipeline = ColoPipeline(store: store)
        connections = .allocate(capacity: connectionCount)
        let client = IPv4Address(10, 10, 0, 1)
        let replica = IPv4Address(10, 10, 0, 2)
        let payload = [UInt8](repeating: 0x5A, count: payloadSize)
        for n in 0..<connectionCount {
            let port = UInt16(40000 + n)
            let primaryISN = UInt32(1_000_000 + n * 7919)
            let secondaryISN = UInt32(3_000_000_000 &+ UInt32(n) &* 104_729)
            let toReplica = IPv4Spec(source: client, destination: replica)
            let fromReplica = IPv4Spec(source: replica, destination: client)
            let options: [TCPOptionSpec] = [.windowScale(7)]
            feed(
                .client,
                PacketBuilder.tcp4(
                    TCPSpec(sourcePort: port, destinationPort: 80, sequenceNumber: 1, flags: .syn, options: options),
                    ip: toReplica))
            feed(
                .primary,
                PacketBuilder.tcp4(
                    TCPSpec(
                        sourcePort: 80, destinationPort: port, sequenceNumber: primaryISN, acknowledgmentNumber: 2,
                        flags: [.syn, .ack], options: options), ip: fromReplica))
            feed(
                .secondary,
                PacketBuilder.tcp4(
                    TCPSpec(
                        sourcePort: 80, destinationPort: port, sequenceNumber: secondaryISN, acknowledgmentNumber: 2,
                        flags: [.syn, .ack], options: options), ip: fromReplica))
            var ackSpec = TCPSpec(
                sourcePort: port, destinationPort: 80, sequenceNumber: 2, acknowledgmentNumber: primaryISN + 1,
                flags: .ack)
            ackSpec.window = 65535
            feed(.client, PacketBuilder.tcp4(ackSpec, ip: toReplica))
            let primary = PacketBuilder.tcp4(
                TCPSpec(
                    sourcePort: 80, destinationPort: port, sequenceNumber: primaryISN + 1, acknowledgmentNumber: 2,
                    flags: [.ack, .psh], payload: payload), ip: fromReplica)
            let secondary = PacketBuilder.tcp4(
                TCPSpec(
                    sourcePort: 80, destinationPort: port, sequenceNumber: secondaryISN &+ 1, acknowledgmentNumber: 2,
                    flags: [.ack, .psh], payload: payload), ip: fromReplica)
            let layout = primary.withUnsafeBytes {
                (try? PacketParser.parse($0, linkType: .ethernet)) ?? PacketLayout()
            }
            let primaryFrame = UnsafeMutableRawBufferPointer.allocate(byteCount: primary.count, alignment: 16)
            primaryFrame.copyBytes(from: primary)
            let secondaryFrame = UnsafeMutableRawBufferPointer.allocate(byteCount: secondary.count, alignment: 16)
            secondaryFrame.copyBytes(from: secondary)
            (connections + n).initialize(
                to: GeneratedConnection(
                    primaryFrame: primaryFrame, secondaryFrame: secondaryFrame, primarySeq: primaryISN + 1,
                    secondarySeq: secondaryISN &+ 1, transportOffset: layout.transportOffset))
        }
        collect()
    }

    deinit {
        for n in 0..<connectionCount {
            connections[n].primaryFrame.deallocate()
            connections[n].secondaryFrame.deallocate()
        }
        connections.deallocate()
    }

    private func feed(_ source: PacketSource, _ frame: [UInt8]) {
        guard let ref = frame.withUnsafeBytes({ store.store($0, linkType: .ethernet, source: source, receivedAt: 1) })
        else { return }
        switch source {
        case .client: pipeline.fromClient(ref, now: 1)
        case .primary: pipeline.fromPrimary(ref, now: 1)
        default: pipeline.fromSecondary(ref, now: 1)
        }
    }

    /// Returns output buffers to the store (a port would have written them out), skipping empty lists as the
    /// ports do.
    @inline(__always)
    public func collect() {
        if !pipeline.toClient.isEmpty {
            for ref in pipeline.toClient { store.release(ref) }
            pipeline.toClient.removeAll(keepingCapacity: true)
        }
        if !pipeline.toPrimary.isEmpty {
            for ref in pipeline.toPrimary { store.release(ref) }
            pipeline.toPrimary.removeAll(keepingCapacity: true)
        }
        if !pipeline.toSecondary.isEmpty {
            for ref in pipeline.toSecondary { store.release(ref) }
            pipeline.toSecondary.removeAll(keepingCapacity: true)
        }
    }

    /// The next segment of connection `n` from `source`, written into a store buffer (copied and parsed, as a
    /// port's receive does) with its sequence number advanced (checksum patched incrementally).
    @inline(__always)
    public func receive(_ n: Int, primary: Bool) -> PacketRef? {
        let connection = connections + n
        let template = primary ? connection.pointee.primaryFrame : connection.pointee.secondaryFrame
        let seq = primary ? connection.pointee.primarySeq : connection.pointee.secondarySeq
        guard
            let ref = store.store(
                UnsafeRawBufferPointer(template), linkType: .ethernet, source: primary ? .primary : .secondary,
                receivedAt: 2)
        else { return nil }
        let frame = store.mutableFrame(ref)
        let t = connection.pointee.transportOffset
        let original = UInt32(bigEndian: frame.loadUnaligned(fromByteOffset: t + 4, as: UInt32.self))
        frame.storeBytes(of: seq.bigEndian, toByteOffset: t + 4, as: UInt32.self)
        let sum = UInt16(bigEndian: frame.loadUnaligned(fromByteOffset: t + 16, as: UInt16.self))
        frame.storeBytes(
            of: Checksum.update(sum, old: original, new: seq).bigEndian, toByteOffset: t + 16, as: UInt16.self)
        if primary {
            connection.pointee.primarySeq &+= UInt32(payloadSize)
        } else {
            connection.pointee.secondarySeq &+= UInt32(payloadSize)
        }
        return ref
    }

    public func run(pairs: Int) {
        var n = 0
        for _ in 0..<pairs {
            if let p = receive(n, primary: true) { pipeline.fromPrimary(p, now: 2) }
            if let s = receive(n, primary: false) { pipeline.fromSecondary(s, now: 2) }
            collect()
            n = n + 1 == connectionCount ? 0 : n + 1
        }
    }
}
