import ColoPacket
import ColoStages

#if canImport(Glibc)
    import Glibc
#endif

/// What every port kind counts (SPEC §1, §7): frames and bytes each way, and what it could not do. Nothing a port
/// refuses goes uncounted.
public struct PortCounters: Sendable, Equatable {
    /// Frames the port handed to the proxy (its `tx` side).
    public var framesIn: UInt64 = 0
    /// Frames the proxy handed to the port (its `rx` side) that it took.
    public var framesOut: UInt64 = 0
    public var bytesIn: UInt64 = 0
    public var bytesOut: UInt64 = 0
    /// Frames the port would not take (full socket buffer, device queue, peer gone): the frame was not sent.
    public var sendRefused: UInt64 = 0
    /// Frames read while the packet store was full: read (so the source moves on), counted, not processed.
    public var storeFull: UInt64 = 0
    /// Read or write errors, malformed framing among them.
    public var errors: UInt64 = 0
    /// Connections accepted or made (socket ports), and connections lost.
    public var connects: UInt64 = 0
    public var disconnects: UInt64 = 0

    public init() {}
}

/// A port as the data thread drives it: a source of frames and a sink for them (SPEC §1).
///
/// The one thing to know: a port is owned by the one data thread, which polls the descriptors the port names,
/// calls `receive` when one is readable, `send` for every frame routed to it and `service` on every loop turn;
/// nothing here is thread-safe, and nothing on the `receive`/`send` path may allocate per frame.
public protocol FramePort: AnyObject {
    /// The port's `id=` from its spec.
    var id: String { get }
    /// How the frames this port yields are to be parsed (Ethernet or raw IP).
    var linkType: LinkType { get }
    /// Appends the descriptors to poll for input now (they may change, e.g. when a socket reconnects) with the
    /// events wanted (`POLLIN`, plus `POLLOUT` while the port has output waiting).
    func appendPollDescriptors(to descriptors: inout [pollfd])
    /// Reads up to `limit` frames straight into store buffers and hands each to `deliver` with `length`,
    /// `linkType`, `receivedAt` and the virtio-net header it came with (`store.setVnetHeader`; none by default) set
    /// and the frame parsed (`store.reparse`). Returns the number of frames delivered; never blocks.
    func receive(into store: PacketStore, limit: Int, now: UInt64, deliver: (PacketRef) -> Void) -> Int
    /// Sends one frame, with the virtio-net header it arrived with (empty: none) for a port whose framing carries
    /// one; a port that carries none, or its own, ignores it. Returns false, counted in `sendRefused`, when the port
    /// cannot take it now; never blocks.
    func send(_ frame: UnsafeRawBufferPointer, vnetHeader: UnsafeRawBufferPointer) -> Bool
    /// Timers and deferred work: accepting, reconnecting, flushing buffered output. Called on every loop turn.
    func service(now: UInt64)
    var portCounters: PortCounters { get }
    /// Releases descriptors; afterwards the port yields nothing and refuses every frame.
    func close()
    /// Whether the frames this port yields stay with it until `settle` (NFQUEUE: the kernel holds each packet
    /// until its verdict). Such frames are settled, not written, when they leave the proxy toward this same port.
    var holdsVerdicts: Bool { get }
    /// The verdict on a frame this port yielded (`ref` as delivered): accept lets the original go on, drop
    /// discards it. Called exactly once per such frame.
    func settle(_ ref: PacketRef, accept: Bool)
}

extension FramePort {
    /// Sends a frame that came without a virtio-net header.
    public func send(_ frame: UnsafeRawBufferPointer) -> Bool {
        send(frame, vnetHeader: UnsafeRawBufferPointer(start: nil, count: 0))
    }

    public var holdsVerdicts: Bool { false }
    public func settle(_ ref: PacketRef, accept: Bool) {}
}
