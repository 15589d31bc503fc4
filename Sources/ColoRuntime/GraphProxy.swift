import ColoCapture
import ColoConntrack
import ColoControl
import ColoFragments
import ColoPacket
import ColoPorts
import ColoStages

#if canImport(Glibc)
    import Glibc
#endif

/// The proxy on any ports with any chain of `--object` stages (`ObjectGraph` says how frames move).
///
/// One data thread (`run`) polls every port, reads frames in batches straight into the packet store, walks them
/// through their chains and writes what comes out; control commands reach it through a mailbox, so no packet
/// state is ever touched by two threads. One tracker holds every zone; fragments are tracked whole (the
/// fragment-aware front end holds them until their datagram completes).
public final class GraphProxy: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var batchSize = 64
        public var storeBuffers = 16384
        /// When both of a comparer's input ports have frames waiting and one side already has this many more
        /// packets queued in the comparer than the other, the leading side's port is not read that turn.
        public var leadLimit = 256
        public var conntrack = ColoPipeline.defaultConntrack
        /// The conntrack stages' fragment front end: its bounds and how long an unfinished datagram is held.
        public var fragments = FragmentReassembler.Configuration()
        public init() {}
    }

    public struct Counters: Sendable, Equatable {
        /// Frames that reached the end of a port's tx chain with nothing reading that port.
        public var unrouted: UInt64 = 0
        /// Mirror copies not made: the store was full.
        public var mirrorRefused: UInt64 = 0
        public var storeFull: UInt64 = 0
        public var dumpErrors: UInt64 = 0
        public var sendRefused: UInt64 = 0
        /// Frames from a verdict-holding port (NFQUEUE) that nothing read: accepted, so the kernel passes them on.
        public var passed: UInt64 = 0
        /// Frames dropped because their path through the graph went deeper than `maximumDepth` hops: the specs
        /// loop (e.g. two redirectors sending to each other's ports).
        public var loops: UInt64 = 0
        /// Raw-IP frames (NFQUEUE, TUN) bound for an Ethernet port: not sent (no MAC addresses to give them).
        public var linkMismatch: UInt64 = 0
    }

    public let ports: [any FramePort]
    public let store: PacketStore
    public let tracker: ConnectionTracker
    public let comparers: [Comparer]
    /// The port each comparer's primary_in and secondary_in read from directly (nil: a channel, not a port).
    private let comparerInputs: [(primary: Int?, secondary: Int?)]
    /// Ports not read this turn: the store is filling with one replica's frames waiting for the other's, and
    /// reading on would only fill it (frames then read and discarded as store-full). Not reading leaves them in
    /// the kernel (a stream socket's sender waits), so the other replica catches up first.
    @exclusivity(unchecked) private var paused: [Bool]
    @exclusivity(unchecked) private var storePressure = false
    /// Per port, this turn: poll reported it readable / it is left for a later turn because it leads its comparer.
    @exclusivity(unchecked) private var readable: [Bool]
    @exclusivity(unchecked) private var deferred: [Bool]
    /// Per port, this turn: any descriptor had an event or input waits (served), input waits on its I/O thread.
    @exclusivity(unchecked) private var active: [Bool]
    @exclusivity(unchecked) private var pendingInput: [Bool]
    /// Turns on which a leading side's port was left unread while the other side had frames waiting
    /// (`query-stats` graph.lead-deferred-turns).
    @exclusivity(unchecked) public private(set) var leadDeferredTurns: UInt64 = 0
    /// Turns on which some port was paused for store pressure (`query-stats` graph.paused-turns).
    @exclusivity(unchecked) public private(set) var pausedTurns: UInt64 = 0
    public let rewriters: [Rewriter]
    @exclusivity(unchecked) public private(set) var counters = Counters()
    public var onDivergence: ((DivergenceEvent) -> Void)?
    public var onFailover: (() -> Void)?

    let graph: ObjectGraph
    private let frontEnd: FragmentAwareTracker
    private let configuration: Configuration
    private let mailbox: DataThreadMailbox<GraphProxy>
    private var writers: [PcapWriter?]
    /// The compiled chains in flat memory of trivial values, for the per-frame walk: reading a stage copies no
    /// strings and no nested arrays (no retain/release per frame). Chain c's stages are
    /// `stageList[chainStart[c]..<chainStart[c + 1]]`, each on or off in `stageEnabled` (`filter-set-status`).
    private let stageList: UnsafeMutablePointer<ObjectGraph.Stage>
    private let stageEnabled: UnsafeMutablePointer<Bool>
    private let chainStart: UnsafeMutablePointer<Int>
    private let chainEnds: UnsafeMutablePointer<ObjectGraph.End>
    private let compareOutdevs: UnsafeMutablePointer<ObjectGraph.Target>
    /// Per comparer: the port its released frames are written to straight away, when its outdev is a port whose rx
    /// chain has no stages (the usual case); -1 when they walk that chain.
    private let directOutdevs: UnsafeMutablePointer<Int>
    /// Per port: where a frame it yields starts walking, and as what source. A port whose tx chain has no stages
    /// and hands frames on to a comparer input or another port starts them there, one hop saved; otherwise its
    /// tx chain, as `.other`.
    private let entryChains: UnsafeMutablePointer<Int>
    private let entrySources: UnsafeMutablePointer<PacketSource>
    /// Where a packet held by the fragment front end continues: chain << 16 | slot, by store index.
    private let resume: UnsafeMutablePointer<UInt32>
    /// The port each stored frame came from (`.max` for copies), by store index: frames of a verdict-holding port
    /// are settled with it when they leave.
    private let origin: UnsafeMutablePointer<UInt16>
    private let holdsVerdicts: [Bool]
    /// Whether any port holds verdicts (NFQUEUE): without one, `settle` has nothing to do for any frame.
    private let anyHoldsVerdicts: Bool
    private var eventsSeen: [Int]
    /// `comparers`, `rewriters` and the socket ports again, unretained, for the per-frame walk: a call on a class
    /// reference read out of an array retains and releases it around the call. The arrays own them for as long
    /// as the proxy lives.
    private let comparerRefs: UnsafeMutablePointer<Unmanaged<Comparer>>
    private let rewriterRefs: UnsafeMutablePointer<Unmanaged<Rewriter>>
    private let rewriterCount: Int
    /// Per port, the socket port it is (nil for other kinds, which are called through `ports`).
    private let socketRefs: UnsafeMutablePointer<Unmanaged<SocketPort>?>
    private let portLinkTypes: UnsafeMutablePointer<LinkType>
    @exclusivity(unchecked) private var failedOver = false
    @exclusivity(unchecked) var tally = MetricsTally()
    @exclusivity(unchecked) private var depth = 0
    /// Per colo-compare, its `notify_dev` port (checkpoint requests out, checkpoint-done in), if it has one.
    private var notifyPorts: [SocketPort?] = []
    /// Per Ethernet port, 12 bytes: the destination and source MAC of the last frame it handed over, for giving
    /// raw-IP frames bound there an Ethernet header; all zero until it has sent one.
    private let learnedAddresses: UnsafeMutableRawPointer
    private let learnsAddresses: [Bool]
    /// Where a raw-IP frame gets its Ethernet header: one buffer, as large as the largest frame.
    private let framing: UnsafeMutableRawBufferPointer

    /// Builds the graph (validating every spec) over already opened ports, in the order of `portSpecs`.
    public init(
        ports: [any FramePort], portSpecs: [PortSpec], objects: [ObjectSpec],
        configuration: Configuration = Configuration()
    ) throws {
        let graph = try ObjectGraph(ports: portSpecs, objects: objects)
        guard ports.count == portSpecs.count else {
            throw GraphProxyError("\(ports.count) ports opened for \(portSpecs.count) port specs")
        }
        self.graph = graph
        self.ports = ports
        self.configuration = configuration
        let store = PacketStore(small: configuration.storeBuffers, large: 64)
        store.prefaultSmallBuffers()
        let tracker = ConnectionTracker(configuration: configuration.conntrack)
        self.store = store
        self.tracker = tracker
        frontEnd = FragmentAwareTracker(
            tracker: tracker, reassembler: FragmentReassembler(configuration: configuration.fragments))
        var rewriters: [Rewriter] = []
        for id in graph.rewriterIDs {
            guard
                let rewriter = Rewriter(
                    tracker: tracker, primaryZone: ObjectGraph.primaryZone, secondaryZone: ObjectGraph.secondaryZone)
            else { throw GraphProxyError("filter-rewriter \(id): the tracker has no extension words left") }
            rewriters.append(rewriter)
        }
        self.rewriters = rewriters
        comparerInputs = graph.compares.map { node in
            (graph.portIDs.firstIndex(of: node.spec.primaryIn), graph.portIDs.firstIndex(of: node.spec.secondaryIn))
        }
        paused = Array(repeating: false, count: ports.count)
        readable = Array(repeating: false, count: ports.count)
        deferred = Array(repeating: false, count: ports.count)
        active = Array(repeating: false, count: ports.count)
        pendingInput = Array(repeating: false, count: ports.count)
        comparers = graph.compares.map { node in
            var compare = CompareConfiguration()
            compare.compareTimeout = node.spec.compareTimeoutMilliseconds * 1_000_000
            compare.expiredScanCycle = node.spec.expiredScanCycleMilliseconds * 1_000_000
            compare.maxQueueSize = node.spec.maxQueueSize
            compare.onDivergence = node.spec.onDivergence
            return Comparer(configuration: compare, store: store, tracker: tracker)
        }
        eventsSeen = Array(repeating: 0, count: graph.compares.count)
        comparerRefs = .allocate(capacity: max(1, comparers.count))
        for (index, comparer) in comparers.enumerated() {
            (comparerRefs + index).initialize(to: .passUnretained(comparer))
        }
        rewriterRefs = .allocate(capacity: max(1, rewriters.count))
        for (index, rewriter) in rewriters.enumerated() {
            (rewriterRefs + index).initialize(to: .passUnretained(rewriter))
        }
        rewriterCount = rewriters.count
        socketRefs = .allocate(capacity: max(1, ports.count))
        portLinkTypes = .allocate(capacity: max(1, ports.count))
        for (index, port) in ports.enumerated() {
            (socketRefs + index).initialize(to: (port as? SocketPort).map { .passUnretained($0) })
            (portLinkTypes + index).initialize(to: port.linkType)
        }
        let stageCount = graph.chains.reduce(0) { $0 + $1.slots.count }
        stageList = .allocate(capacity: max(1, stageCount))
        stageEnabled = .allocate(capacity: max(1, stageCount))
        chainStart = .allocate(capacity: graph.chains.count + 1)
        chainEnds = .allocate(capacity: max(1, graph.chains.count))
        var cursor = 0
        for (index, chain) in graph.chains.enumerated() {
            chainStart[index] = cursor
            (chainEnds + index).initialize(to: chain.end)
            for slot in chain.slots {
                (stageList + cursor).initialize(to: slot.stage)
                (stageEnabled + cursor).initialize(to: graph.initialStatus[slot.objectID] ?? true)
                cursor += 1
            }
        }
        chainStart[graph.chains.count] = cursor
        compareOutdevs = .allocate(capacity: max(1, graph.compares.count))
        for (index, node) in graph.compares.enumerated() { (compareOutdevs + index).initialize(to: node.outdev) }
        entryChains = .allocate(capacity: max(1, ports.count))
        entrySources = .allocate(capacity: max(1, ports.count))
        for port in ports.indices {
            let chain = ObjectGraph.txChain(port)
            var entry = (chain: chain, source: PacketSource.other)
            if Self.hasNoStages(chain, chainStart), case .deliver(let target) = chainEnds[chain] {
                switch target {
                case .compare(let index, let primary):
                    entry = (graph.compareChain(index, primary: primary), primary ? .primary : .secondary)
                case .port(let other):
                    entry = (ObjectGraph.rxChain(other), .other)
                case .inject:
                    break
                }
            }
            (entryChains + port).initialize(to: entry.chain)
            (entrySources + port).initialize(to: entry.source)
        }
        directOutdevs = .allocate(capacity: max(1, graph.compares.count))
        for (index, node) in graph.compares.enumerated() {
            var direct = -1
            if case .port(let port) = node.outdev {
                let chain = ObjectGraph.rxChain(port)
                if Self.hasNoStages(chain, chainStart), case .send(let end) = chainEnds[chain], end == port {
                    direct = port
                }
            }
            (directOutdevs + index).initialize(to: direct)
        }
        let total = configuration.storeBuffers + 64
        resume = .allocate(capacity: total)
        resume.initialize(repeating: 0, count: total)
        origin = .allocate(capacity: total)
        origin.initialize(repeating: .max, count: total)
        holdsVerdicts = ports.map(\.holdsVerdicts)
        anyHoldsVerdicts = holdsVerdicts.contains(true)
        learnedAddresses = .allocate(byteCount: max(1, ports.count) * 12, alignment: 8)
        learnedAddresses.initializeMemory(as: UInt8.self, repeating: 0, count: max(1, ports.count) * 12)
        // Only worth it when some raw-IP port exists to send from.
        let mixed = ports.contains { $0.linkType == .rawIP }
        learnsAddresses = ports.map { mixed && $0.linkType == .ethernet }
        framing = .allocate(byteCount: PacketStore.largeSize + 14, alignment: 16)
        mailbox = try DataThreadMailbox(device: "graph proxy wake-up pipe")
        var writers: [PcapWriter?] = []
        for dump in graph.dumps {
            let linkType = portSpecs.firstIndex { $0.id == dump.attachment.netdev }.map { ports[$0].linkType }
            do {
                writers.append(
                    try PcapWriter(
                        path: dump.file, linkType: linkType ?? .ethernet, resolution: .nanoseconds,
                        snapshotLength: dump.maxLength))
            } catch {
                throw GraphProxyError("filter-dump \(dump.id): \(error)")
            }
        }
        self.writers = writers
        for node in graph.compares {
            guard let name = node.spec.notifyDev else {
                notifyPorts.append(nil)
                continue
            }
            // validate() checked that notify_dev names a socket port.
            guard let index = portSpecs.firstIndex(where: { $0.id == name }), let socket = ports[index] as? SocketPort
            else {
                throw GraphProxyError("colo-compare \(node.spec.id): notify_dev '\(name)' is not an open socket port")
            }
            socket.notifyHandler = { [unowned self, unowned socket] message in
                switch message {
                case .checkpointDone: self.checkpointDone()
                case .proxyInit: socket.sendNotify(.proxyInitReply)
                case .doCheckpoint, .proxyInitReply: break  // the proxy's own messages: nothing to do
                }
            }
            notifyPorts.append(socket)
        }
    }

    deinit {
        stageList.deallocate()
        comparerRefs.deallocate()
        rewriterRefs.deallocate()
        socketRefs.deallocate()
        portLinkTypes.deallocate()
        stageEnabled.deallocate()
        chainStart.deallocate()
        chainEnds.deallocate()
        compareOutdevs.deallocate()
        directOutdevs.deallocate()
        entryChains.deallocate()
        entrySources.deallocate()
        resume.deallocate()
        origin.deallocate()
        framing.deallocate()
        learnedAddresses.deallocate()
    }

    // MARK: - Threads

    /// Asks `run` to return (any thread).
    public func stop() { mailbox.requestStop() }

    /// Runs `work` on the data thread; nil if it did not answer within `timeout` seconds.
    public func perform<T: Sendable>(timeout: Double = 2, _ work: @escaping @Sendable (GraphProxy) -> T) -> T? {
        mailbox.perform(timeout: timeout, work)
    }

    /// Moves packets until `stop()`.
    public func run() {
        var descriptors: [pollfd] = []
        descriptors.reserveCapacity(ports.count * 2 + 1)
        var owners: [Int] = []
        owners.reserveCapacity(ports.count * 2 + 1)
        var lastTick = monotonicNanoseconds()
        let tickEvery =
            comparers.map { $0.configuration.expiredScanCycle }.min().map { min($0, 50_000_000) }
            ?? 50_000_000
        while !mailbox.stopRequested {
            descriptors.removeAll(keepingCapacity: true)
            owners.removeAll(keepingCapacity: true)
            descriptors.append(pollfd(fd: mailbox.wakeDescriptor, events: Int16(POLLIN), revents: 0))
            owners.append(-1)
            updatePauses()
            for (index, port) in ports.enumerated() {
                let before = descriptors.count
                port.appendPollDescriptors(to: &descriptors)
                for slot in before..<descriptors.count {
                    owners.append(index)
                    if paused[index] { descriptors[slot].events &= ~Int16(POLLIN) }
                }
            }
            // A socket port whose I/O thread already holds more read input is ready without a wake-up.
            let pending = markPendingInput()
            let ready = poll(&descriptors, nfds_t(descriptors.count), pending ? 0 : 20)
            let now = monotonicNanoseconds()
            if ready > 0 || pending {
                noteReadiness(descriptors, owners)
                deferLeadingSides()
                if descriptors[0].revents != 0 {
                    _ = mailbox.runPending(self)
                    reportEvents()
                }
                // A port is read once per turn, whatever number of descriptors it has; a paused or deferred one
                // not at all.
                for index in ports.indices where active[index] && !paused[index] && !deferred[index] {
                    receive(from: index, now: now)
                }
            }
            for port in ports { port.service(now: now) }
            if now &- lastTick >= tickEvery {
                tick(now: now)
                lastTick = now
            }
            reportEvents()
        }
    }

    /// Store pressure: above ¾ of the small buffers in use, the input of each comparer side that holds more queued
    /// packets than the other is paused, until use falls below ½ (or the sides even out). Nothing is paused
    /// otherwise, so a port never waits on another port's peer.
    private func updatePauses() {
        let used = store.inUse
        let capacity = configuration.storeBuffers
        if !storePressure && used > capacity / 4 * 3 {
            storePressure = true
        } else if storePressure && used < capacity / 2 {
            storePressure = false
            for index in paused.indices { paused[index] = false }
        }
        guard storePressure else { return }
        for index in paused.indices { paused[index] = false }
        for (index, inputs) in comparerInputs.enumerated() {
            let queued = comparers[index].queuedPackets
            if queued.primary > queued.secondary, let port = inputs.primary { paused[port] = true }
            if queued.secondary > queued.primary, let port = inputs.secondary { paused[port] = true }
        }
        if paused.contains(true) { pausedTurns &+= 1 }
    }

    /// Keeps a comparer's two inputs close together: when both ports have frames waiting and one side already
    /// leads by `leadLimit` queued packets, only the other side is read this turn. A lead, once there, otherwise
    /// lasts (each turn reads about as much from both), and every comparison then reaches back to packets stored
    /// thousands of frames earlier, long gone from the caches. A side whose partner has nothing waiting is always
    /// read, so a silent replica never holds the other's traffic back (its packets wait for the compare timeout in
    /// the comparer as before).
    private func deferLeadingSides() {
        for index in deferred.indices { deferred[index] = false }
        var any = false
        for (index, inputs) in comparerInputs.enumerated() {
            guard let primary = inputs.primary, let secondary = inputs.secondary, primary != secondary,
                readable[primary], readable[secondary]
            else { continue }
            let queued = comparers[index].queuedPackets
            if queued.primary >= queued.secondary + configuration.leadLimit {
                deferred[primary] = true
                any = true
            } else if queued.secondary >= queued.primary + configuration.leadLimit {
                deferred[secondary] = true
                any = true
            }
        }
        if any { leadDeferredTurns &+= 1 }
    }

    /// Sets `pendingInput` for the socket ports (not paused) whose I/O thread holds read input; true if any.
    private func markPendingInput() -> Bool {
        var any = false
        for index in ports.indices {
            pendingInput[index] = false
            guard !paused[index], let socket = socketRefs[index] else { continue }
            if socket._withUnsafeGuaranteedRef({ $0.hasPendingInput }) {
                pendingInput[index] = true
                any = true
            }
        }
        return any
    }

    /// From poll's answer and `pendingInput`: which ports to serve this turn (`active`: any event) and which have
    /// frames waiting (`readable`: input, for `deferLeadingSides`).
    private func noteReadiness(_ descriptors: [pollfd], _ owners: [Int]) {
        for index in ports.indices {
            active[index] = pendingInput[index]
            readable[index] = pendingInput[index]
        }
        for (slot, descriptor) in descriptors.enumerated() where owners[slot] >= 0 && descriptor.revents != 0 {
            active[owners[slot]] = true
            if descriptor.revents & Int16(POLLIN) != 0 { readable[owners[slot]] = true }
        }
    }

    private func receive(from index: Int, now: UInt64) {
        let chain = entryChains[index]
        let source = entrySources[index]
        let deliver = { (ref: PacketRef) in
            self.store.metadata(ref).pointee.source = source
            self.origin[Int(ref.index)] = UInt16(truncatingIfNeeded: index)
            if self.learnsAddresses[index] { self.learnAddresses(ref, port: index) }
            self.process(ref, chain: chain, from: 0, now: now)
        }
        if let socket = socketRefs[index] {
            _ = socket._withUnsafeGuaranteedRef {
                $0.receive(into: store, limit: configuration.batchSize, now: now, deliver: deliver)
            }
        } else {
            _ = ports[index].receive(into: store, limit: configuration.batchSize, now: now, deliver: deliver)
        }
    }

    private func tick(now: UInt64) {
        for index in comparers.indices {
            comparers[index].scan(now: now)
            drain(index, now: now)
        }
        frontEnd.expire(now: now) { token, result in
            // A fragment whose datagram never completed goes on untracked-invalid, like any bad packet.
            let ref = PacketRef(index: UInt32(truncatingIfNeeded: token))
            store.metadata(ref).pointee.track = result
            let hop = resume[Int(ref.index)]
            process(ref, chain: Int(hop >> 16), from: Int(hop & 0xFFFF) + 1, now: now)
        }
    }

    // MARK: - Walking the chains

    /// Hops (chains entered) one frame may take; a loop in the specs ends here instead of in a stack overflow.
    static let maximumDepth = 32

    /// Walks `ref` from stage `start` of `chain` on. A frame that goes on to another chain (a redirect, a chain's
    /// end delivering to a port or a comparer) keeps walking in this loop, not in a nested call: a frame crosses
    /// three to five chains on its way through a colo-compare, and each nested call cost more than the hop.
    /// Copies (mirror) and released packets (a comparer's output) are walked by nested calls.
    private func process(_ ref: PacketRef, chain startChain: Int, from start: Int, now: UInt64) {
        var hops = 0
        defer { depth -= hops }
        var chain = startChain
        var position = start
        guard enter(ref, hops: &hops) else { return }
        walk: while true {
            let first = chainStart[chain]
            let count = chainStart[chain + 1] - first
            while position < count {
                let index = first + position
                position += 1
                guard stageEnabled[index] else { continue }
                switch stageList[index] {
                case .mirror(let target):
                    guard let copy = duplicate(ref) else {
                        counters.mirrorRefused &+= 1
                        continue
                    }
                    deliver(copy, to: target, now: now)
                case .redirect(let target):
                    guard let target else { continue }
                    guard enter(ref, hops: &hops) else { return }
                    hop(ref, to: target, chain: &chain, position: &position)
                    continue walk
                case .rewriteToward(let index):
                    rewriterRefs[index]._withUnsafeGuaranteedRef { $0.rewriteTowardSecondary(ref, in: store) }
                case .rewriteFrom(let index):
                    rewriterRefs[index]._withUnsafeGuaranteedRef { $0.rewriteFromSecondary(ref, in: store) }
                case .track(let zone):
                    let meta = store.metadata(ref)
                    if meta.pointee.track.zone == zone, !meta.pointee.track.state.isEmpty { continue }
                    guard meta.pointee.parsed else {
                        meta.pointee.track = .invalid(.malformed, zone: zone)
                        continue
                    }
                    // Tested in place: read from a fresh copy of the layout, the flag waited on the copy.
                    if !meta.pointee.layout.isFragment {
                        // Whole datagrams (nearly all) are tracked here and walk on: no hop through the fragment
                        // front end's delivery closure, no recursion.
                        meta.pointee.track = tracker.track(store.packet(ref), zone: zone, now: now)
                        continue
                    }
                    if meta.pointee.track.invalidReason == .fragmentExpired {
                        // Its datagram already timed out in another zone (a mirror copy made after that zone's
                        // conntrack): the rest is not coming here either, so it is not held for a second timeout.
                        meta.pointee.track = .invalid(.fragmentExpired, zone: zone)
                        continue
                    }
                    let packet = store.packet(ref)
                    resume[Int(ref.index)] = UInt32(chain) << 16 | UInt32(position - 1)
                    let next = position
                    let chain = chain
                    frontEnd.process(packet, zone: zone, now: now, token: UInt64(ref.index)) { token, result in
                        let done = PacketRef(index: UInt32(truncatingIfNeeded: token))
                        store.metadata(done).pointee.track = result
                        process(done, chain: chain, from: next, now: now)
                    }
                    return
                case .dump(let index):
                    guard let writer = writers[index] else { continue }
                    do {
                        try writer.write(bytes: store.frame(ref), timestampNanoseconds: wallClockNanoseconds())
                    } catch {
                        counters.dumpErrors &+= 1
                    }
                }
            }
            switch chainEnds[chain] {
            case .deliver(let target):
                guard enter(ref, hops: &hops) else { return }
                hop(ref, to: target, chain: &chain, position: &position)
                continue walk
            case .send(let port):
                write(ref, to: port)
            case .unrouted:
                if settle(ref, accept: true) {
                    counters.passed &+= 1
                } else {
                    counters.unrouted &+= 1
                }
                store.release(ref)
            case .compare(let index, let primary):
                if primary {
                    for rewriter in 0..<rewriterCount {
                        rewriterRefs[rewriter]._withUnsafeGuaranteedRef { $0.observePrimary(ref, in: store) }
                    }
                    comparerRefs[index]._withUnsafeGuaranteedRef { $0.primary(ref, now: now) }
                } else {
                    comparerRefs[index]._withUnsafeGuaranteedRef { $0.secondary(ref, now: now) }
                }
                drain(index, now: now)
            }
            return
        }
    }

    /// A frame at the end of `port`'s rx chain: written to the port (or, back at the verdict-holding port it came
    /// from, accepted there), then its buffer freed.
    @inline(__always)
    private func write(_ ref: PacketRef, to port: Int) {
        if anyHoldsVerdicts && Int(origin[Int(ref.index)]) == port && holdsVerdicts[port] {
            // Back to where the kernel holds it: the verdict is the release.
            settle(ref, accept: true)
        } else {
            // Fields read in place: a copy of the whole metadata was a 272-byte memcpy per frame sent.
            let meta = store.metadata(ref)
            var bytes = store.frame(ref)
            // The virtio-net header it arrived with goes on with it (to a port whose framing carries one).
            var header = UnsafeRawBufferPointer(start: nil, count: 0)
            if meta.pointee.vnetHeaderLength > 0 { header = store.vnetHeader(ref) }
            var sendable = true
            if meta.pointee.linkType != portLinkTypes[port] {
                // Ethernet toward a raw-IP port: the IP packet goes. Raw IP toward an Ethernet port gets the
                // addresses last seen from that port, swapped (the station behind it becomes the destination);
                // before the port has sent anything it is refused and counted.
                let network = meta.pointee.layout.network
                let isIP = meta.pointee.parsed && (network == .ipv4 || network == .ipv6)
                if portLinkTypes[port] == .rawIP, isIP {
                    bytes = UnsafeRawBufferPointer(rebasing: bytes[meta.pointee.layout.networkOffset...])
                    header = UnsafeRawBufferPointer(start: nil, count: 0)
                } else if meta.pointee.linkType == .rawIP, isIP,
                    let framed = addEthernetHeader(bytes, meta.pointee, toward: port)
                {
                    bytes = framed
                } else {
                    counters.linkMismatch &+= 1
                    sendable = false
                }
            }
            if sendable && !send(bytes, vnetHeader: header, to: port) {
                counters.sendRefused &+= 1
            }
            // Written elsewhere: the kernel's original must not go on as well.
            settle(ref, accept: false)
        }
        store.release(ref)
    }

    /// Whether `chain` holds no stages at all (so none can be switched on later): its frames only reach its end.
    private static func hasNoStages(_ chain: Int, _ chainStart: UnsafeMutablePointer<Int>) -> Bool {
        chainStart[chain + 1] == chainStart[chain]
    }

    /// Counts one more chain entered by the walk under way; false (the frame dropped and counted) when the walk
    /// is deeper than `maximumDepth`: the specs loop.
    @inline(__always)
    private func enter(_ ref: PacketRef, hops: inout Int) -> Bool {
        depth += 1
        hops += 1
        guard depth <= Self.maximumDepth else {
            counters.loops &+= 1
            settle(ref, accept: false)
            store.release(ref)
            return false
        }
        return true
    }

    /// Where a frame delivered to `target` walks on.
    @inline(__always)
    private func hop(_ ref: PacketRef, to target: ObjectGraph.Target, chain: inout Int, position: inout Int) {
        switch target {
        case .port(let port):
            chain = ObjectGraph.rxChain(port)
            position = 0
        case .compare(let index, let primary):
            store.metadata(ref).pointee.source = primary ? .primary : .secondary
            chain = graph.compareChain(index, primary: primary)
            position = 0
        case .inject(let injected, let at):
            chain = injected
            position = at
        }
    }

    /// Walks `ref` from where `target` takes it (a nested walk: copies and released packets).
    private func deliver(_ ref: PacketRef, to target: ObjectGraph.Target, now: UInt64) {
        var chain = 0
        var position = 0
        hop(ref, to: target, chain: &chain, position: &position)
        process(ref, chain: chain, from: position, now: now)
    }

    private func send(_ bytes: UnsafeRawBufferPointer, vnetHeader: UnsafeRawBufferPointer, to port: Int) -> Bool {
        if let socket = socketRefs[port] {
            return socket._withUnsafeGuaranteedRef { $0.send(bytes, vnetHeader: vnetHeader) }
        }
        return ports[port].send(bytes, vnetHeader: vnetHeader)
    }

    /// Sends on what the comparer released and returns what it dropped. Popped one at a time from the head:
    /// delivering can reach this comparer again and queue more (a nested drain then takes those), and every ref
    /// still leaves in the order the comparer queued it.
    private func drain(_ index: Int, now: UInt64) {
        comparerRefs[index]._withUnsafeGuaranteedRef { comparer in
            guard comparer.hasOutput else { return }
            let target = compareOutdevs[index]
            let direct = directOutdevs[index]
            while let ref = comparer.takeReleased() {
                tally.released(receivedAt: store.metadata(ref).pointee.receivedAt, now: now)
                // Straight to the port when its rx chain is empty: the same end as walking it, without the walk.
                if direct >= 0 { write(ref, to: direct) } else { deliver(ref, to: target, now: now) }
            }
            while let ref = comparer.takeDropped() {
                settle(ref, accept: false)
                store.release(ref)
            }
        }
    }

    private func learnAddresses(_ ref: PacketRef, port: Int) {
        let frame = store.frame(ref)
        guard frame.count >= 14, let base = frame.baseAddress else { return }
        (learnedAddresses + port * 12).copyMemory(from: base, byteCount: 12)
    }

    /// `bytes` (an IP packet) behind an Ethernet header toward `port`: destination = the source last seen from
    /// the port, source = the destination it used. nil when the port has not sent a frame yet.
    private func addEthernetHeader(_ bytes: UnsafeRawBufferPointer, _ meta: PacketMetadata, toward port: Int)
        -> UnsafeRawBufferPointer?
    {
        let learned = UnsafeRawBufferPointer(start: learnedAddresses + port * 12, count: 12)
        guard learned.contains(where: { $0 != 0 }), bytes.count + 14 <= framing.count, let base = framing.baseAddress,
            let source = bytes.baseAddress, let seen = learned.baseAddress
        else { return nil }
        base.copyMemory(from: seen + 6, byteCount: 6)  // to the station behind the port
        (base + 6).copyMemory(from: seen, byteCount: 6)  // from the address it was talking to
        let etherType: UInt16 = meta.layout.network == .ipv6 ? 0x86DD : 0x0800
        base.storeBytes(of: etherType.bigEndian, toByteOffset: 12, as: UInt16.self)
        (base + 14).copyMemory(from: source, byteCount: bytes.count)
        return UnsafeRawBufferPointer(start: base, count: bytes.count + 14)
    }

    /// Gives the verdict on `ref` if it came from a verdict-holding port; returns whether it did.
    @discardableResult @inline(__always)
    private func settle(_ ref: PacketRef, accept: Bool) -> Bool {
        let port = Int(origin[Int(ref.index)])
        guard anyHoldsVerdicts, port < ports.count, holdsVerdicts[port] else { return false }
        origin[Int(ref.index)] = .max
        ports[port].settle(ref, accept: accept)
        return true
    }

    private func duplicate(_ ref: PacketRef) -> PacketRef? {
        let meta = store.metadata(ref).pointee
        guard let copy = store.acquire(length: meta.length) else { return nil }
        origin[Int(copy.index)] = .max
        store.buffer(copy).copyMemory(from: store.frame(ref))
        store.metadata(copy).pointee.length = meta.length
        store.metadata(copy).pointee.linkType = meta.linkType
        store.metadata(copy).pointee.receivedAt = meta.receivedAt
        if meta.vnetHeaderLength > 0 { store.setVnetHeader(copy, store.vnetHeader(ref)) }
        store.metadata(copy).pointee.source = meta.source
        store.reparse(copy)
        store.metadata(copy).pointee.track = meta.track
        return copy
    }

    private func reportEvents() {
        for (index, comparer) in comparers.enumerated() {
            let events = comparer.events
            guard eventsSeen[index] < events.count else { continue }
            let wall = wallClockNanoseconds()
            while eventsSeen[index] < events.count {
                var event = events[eventsSeen[index]]
                event.time = wall
                eventsSeen[index] += 1
                tally.diverged(event)
                onDivergence?(event)
            }
            // A checkpoint is asked of the controller on the notify channel (QEMU's colo-compare does the same).
            if comparer.checkpointRequested, let notify = notifyPorts[index] { notify.sendNotify(.doCheckpoint) }
            comparer.checkpointRequested = false
        }
    }

    // MARK: - Control

    /// The controller reported a checkpoint done: every comparer flushes, offsets restart.
    public func checkpointDone() {
        let now = monotonicNanoseconds()
        for index in comparers.indices {
            comparers[index].checkpointDone(now: now)
            drain(index, now: now)
        }
        for rewriter in rewriters { rewriter.checkpoint() }
    }

    /// The primary is gone: the secondary's output goes to the client from now on.
    public func failover() {
        guard !failedOver else { return }
        failedOver = true
        let now = monotonicNanoseconds()
        for index in comparers.indices {
            comparers[index].failover(now: now)
            drain(index, now: now)
        }
        for rewriter in rewriters { rewriter.failover() }
        onFailover?()
    }

    /// Switches every slot of filter `id`; false if no filter has that id.
    public func setStatus(_ id: String, on: Bool) -> Bool {
        var found = false
        for chain in graph.chains.indices {
            for slot in graph.chains[chain].slots.indices where graph.chains[chain].slots[slot].objectID == id {
                stageEnabled[chainStart[chain] + slot] = on
                found = true
            }
        }
        return found && graph.initialStatus[id] != nil
    }

    public var filterIDs: [String] { graph.initialStatus.keys.sorted() }

    /// On shutdown: the primary's held packets are released, the secondary's dropped; pcap files flushed.
    @discardableResult
    public func drainOnShutdown() -> (released: Int, dropped: Int) {
        let before = comparers.reduce((0, 0)) { ($0.0 + $1.counters.released, $0.1 + $1.counters.dropped) }
        checkpointDone()
        let after = comparers.reduce((0, 0)) { ($0.0 + $1.counters.released, $0.1 + $1.counters.dropped) }
        for writer in writers { try? writer?.flush() }
        return (Int(after.0 - before.0), Int(after.1 - before.1))
    }
}

public struct GraphProxyError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
