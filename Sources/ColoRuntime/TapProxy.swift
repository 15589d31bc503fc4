import ColoConntrack
import ColoControl
import ColoPacket
import ColoPorts
import ColoStages
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The proxy on three TAP devices (client, primary, secondary) with the standard chain between them: the
/// single-host lab and the `run --client/--primary/--secondary tap,...` shortcut.
///
/// One thread runs the data path (`run`): it polls the three devices, reads frames in batches straight into the
/// packet store, runs them through the pipeline and writes what comes out. Control commands arrive on the
/// control socket's own thread and are handed to the data thread through a locked queue and a wake-up pipe, so
/// the pipeline is only ever touched by one thread.
public final class TapProxy: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var compare = CompareConfiguration()
        /// Frames read from one device before the others get their turn.
        public var batchSize = 64
        public var storeBuffers = 16384
        /// Buffers for frames larger than 2 KiB: jumbo frames, and the 64 KiB TCP segments of devices with
        /// offloads on (each held one until compared).
        public var largeStoreBuffers = 16
        public init() {}
    }

    /// Totals for `query-stats` and the shutdown log.
    public struct Counters: Sendable, Equatable {
        public var framesIn: (client: UInt64, primary: UInt64, secondary: UInt64) = (0, 0, 0)
        public var framesOut: (client: UInt64, primary: UInt64, secondary: UInt64) = (0, 0, 0)
        /// Frames a device would not take (its queue was full): counted, never silently lost.
        public var writeRefused: UInt64 = 0
        public var readErrors: UInt64 = 0
        /// Frames that arrived while the packet store was full.
        public var storeFull: UInt64 = 0
        /// Frames read that were larger than 2 KiB: with offloads on, TCP segments the stack did not cut.
        public var largeFramesIn: UInt64 = 0
        /// Frames with offloads (partial checksum, 64 KiB segment) for a device without a virtio-net header, which
        /// could not describe them: not sent. (The command line gives all three devices the same offloads.)
        public var offloadRefused: UInt64 = 0

        public init() {}

        public static func == (a: Counters, b: Counters) -> Bool {
            a.framesIn == b.framesIn && a.framesOut == b.framesOut && a.writeRefused == b.writeRefused
                && a.readErrors == b.readErrors && a.storeFull == b.storeFull && a.offloadRefused == b.offloadRefused
                && a.largeFramesIn == b.largeFramesIn
        }
    }

    public let client: TapDevice
    public let primary: TapDevice
    public let secondary: TapDevice
    public let store: PacketStore
    public let pipeline: ColoPipeline
    public private(set) var counters = Counters()
    /// Called on the data thread for every divergence, with the event's time set to the wall clock.
    public var onDivergence: ((DivergenceEvent) -> Void)?
    /// Called on the data thread when the proxy fails over.
    public var onFailover: (() -> Void)?

    private let configuration: Configuration
    private let mailbox: DataThreadMailbox<TapProxy>
    private var eventsSeen = 0
    var tally = MetricsTally()
    /// The virtio-net header of the frame being read or written (vnet_hdr devices).
    private let headerScratch = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
    /// Where a read puts what does not fit a small buffer (a 64 KiB segment), before it moves to a large one.
    private let spill = UnsafeMutableRawBufferPointer.allocate(
        byteCount: PacketStore.largeSize - PacketStore.smallSize, alignment: 64)

    public init(
        client: TapDevice, primary: TapDevice, secondary: TapDevice, configuration: Configuration = Configuration()
    )
        throws(PortError)
    {
        self.client = client
        self.primary = primary
        self.secondary = secondary
        self.configuration = configuration
        store = PacketStore(small: configuration.storeBuffers, large: configuration.largeStoreBuffers)
        pipeline = ColoPipeline(store: store, compare: configuration.compare)
        mailbox = try DataThreadMailbox(device: "wake-up pipe")
    }

    deinit {
        headerScratch.deallocate()
        spill.deallocate()
    }

    /// Asks `run` to return (from any thread, or a signal handler's helper thread).
    public func stop() { mailbox.requestStop() }

    /// Runs `work` on the data thread and waits up to `timeout` seconds for its result.
    public func perform<T: Sendable>(timeout: Double = 2, _ work: @escaping @Sendable (TapProxy) -> T) -> T? {
        mailbox.perform(timeout: timeout, work)
    }

    // MARK: - The data path

    /// Moves packets until `stop()`; then releases or drops what is still held (see `drainOnShutdown`).
    public func run() {
        var fds = [
            pollfd(fd: client.fileDescriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: primary.fileDescriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: secondary.fileDescriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: mailbox.wakeDescriptor, events: Int16(POLLIN), revents: 0),
        ]
        var lastTick = Self.monotonicNow()
        while !mailbox.stopRequested {
            let ready = poll(&fds, nfds_t(fds.count), 20)
            let now = Self.monotonicNow()
            if ready > 0 {
                if fds[0].revents != 0 { readBatch(from: client, source: .client, now: now) }
                if fds[1].revents != 0 { readBatch(from: primary, source: .primary, now: now) }
                if fds[2].revents != 0 { readBatch(from: secondary, source: .secondary, now: now) }
            }
            if ready > 0, fds[3].revents != 0, mailbox.runPending(self) { flushOutputs() }
            if now &- lastTick >= 50_000_000 {
                pipeline.tick(now: now)
                lastTick = now
            }
            flushOutputs()
        }
    }

    private func readBatch(from device: TapDevice, source: PacketSource, now: UInt64) {
        let headerLength = device.vnetHeaderLength
        for _ in 0..<configuration.batchSize {
            guard let small = store.acquire(length: PacketStore.smallSize) else {
                counters.storeFull &+= 1
                // Read the frame anyway so the device's queue moves; it is counted, not compared.
                let discarded = try? device.readFrame(
                    header: headerScratch, into: UnsafeMutableRawBufferPointer(rebasing: spill[0..<0]), spill: spill)
                guard discarded != nil else { return }
                continue
            }
            let read: Int?
            do throws(PortError) {
                read = try device.readFrame(header: headerScratch, into: store.buffer(small), spill: spill)
            } catch {
                counters.readErrors &+= 1
                store.release(small)
                return
            }
            guard let length = read else {
                store.release(small)
                return
            }
            var ref = small
            if length > PacketStore.smallSize {
                // A 64 KiB segment (offloads) or a jumbo frame: it moves to a large buffer.
                guard let large = store.acquire(length: length) else {
                    counters.storeFull &+= 1
                    store.release(small)
                    continue
                }
                // Store buffers and the spill area are never empty, so their base addresses exist.
                guard let target = store.buffer(large).baseAddress, let head = store.buffer(small).baseAddress,
                    let tail = spill.baseAddress
                else {
                    store.release(large)
                    store.release(small)
                    continue
                }
                target.copyMemory(from: head, byteCount: PacketStore.smallSize)
                (target + PacketStore.smallSize).copyMemory(from: tail, byteCount: length - PacketStore.smallSize)
                store.release(small)
                ref = large
                counters.largeFramesIn &+= 1
            }
            let meta = store.metadata(ref)
            meta.pointee.length = length
            meta.pointee.linkType = device.mode.linkType
            meta.pointee.source = source
            meta.pointee.receivedAt = now
            if headerLength >= VirtioNetHeader.size {
                meta.pointee.offload = VirtioNetHeader(loadingFrom: headerScratch)
            }
            store.reparse(ref)
            switch source {
            case .client:
                counters.framesIn.client &+= 1
                pipeline.fromClient(ref, now: now)
            case .primary:
                counters.framesIn.primary &+= 1
                pipeline.fromPrimary(ref, now: now)
            case .secondary:
                counters.framesIn.secondary &+= 1
                pipeline.fromSecondary(ref, now: now)
            case .other:
                store.release(ref)
            }
        }
    }

    private func flushOutputs() {
        if !pipeline.toClient.isEmpty {
            let now = Self.monotonicNow()
            for ref in pipeline.toClient {
                tally.released(receivedAt: store.metadata(ref).pointee.receivedAt, now: now)
            }
        }
        write(&pipeline.toClient, to: client) { $0.framesOut.client &+= 1 }
        write(&pipeline.toPrimary, to: primary) { $0.framesOut.primary &+= 1 }
        write(&pipeline.toSecondary, to: secondary) { $0.framesOut.secondary &+= 1 }
        reportEvents()
    }

    private func write(_ list: inout [PacketRef], to device: TapDevice, _ count: (inout Counters) -> Void) {
        guard !list.isEmpty else { return }
        let headerLength = device.vnetHeaderLength
        for ref in list {
            let sent: Bool
            if headerLength > 0 {
                store.metadata(ref).pointee.offload.store(into: headerScratch, length: headerLength)
                sent = (try? device.writeFrame(header: headerScratch, store.frame(ref))) ?? false
            } else if store.metadata(ref).pointee.offload.isEmpty {
                sent = (try? device.write(store.frame(ref))) ?? false
            } else {
                counters.offloadRefused &+= 1
                store.release(ref)
                continue
            }
            if sent { count(&counters) } else { counters.writeRefused &+= 1 }
            store.release(ref)
        }
        list.removeAll(keepingCapacity: true)
    }

    private func reportEvents() {
        let events = pipeline.comparer.events
        guard eventsSeen < events.count else { return }
        let wall = Self.wallClockNow()
        while eventsSeen < events.count {
            var event = events[eventsSeen]
            event.time = wall
            eventsSeen += 1
            tally.diverged(event)
            onDivergence?(event)
        }
        if pipeline.comparer.checkpointRequested {
            pipeline.comparer.checkpointRequested = false
        }
    }

    // MARK: - Control

    /// The controller reported a checkpoint done.
    public func checkpointDone() {
        pipeline.checkpointDone(now: Self.monotonicNow())
        flushOutputs()
    }

    /// The primary is gone: from now on the secondary's output goes to the client.
    public func failover() {
        pipeline.failover(now: Self.monotonicNow())
        flushOutputs()
        onFailover?()
    }

    /// On shutdown: the primary's held packets go to the client (the client already depends on the primary's
    /// view), the secondary's are dropped. Returns (released, dropped).
    @discardableResult
    public func drainOnShutdown() -> (released: Int, dropped: Int) {
        let before = pipeline.comparer.counters
        pipeline.checkpointDone(now: Self.monotonicNow())
        let after = pipeline.comparer.counters
        flushOutputs()
        return (Int(after.released - before.released), Int(after.dropped - before.dropped))
    }

    static func monotonicNow() -> UInt64 { monotonicNanoseconds() }
    static func wallClockNow() -> UInt64 { wallClockNanoseconds() }
}
