import ColoPacket

/// A change to the table, as `conntrack -E` reports it.
public enum ConntrackEventKind: String, Sendable {
    case new = "NEW"
    case update = "UPDATE"
    case destroy = "DESTROY"
}

/// Tracks connections and gives every IP packet its ct_state.
///
/// One tracker serves all zones. It is not thread-safe: one worker owns it (the data path shards flows across
/// workers, each with its own tracker). Time comes in with every call (`now`, nanoseconds of any monotonic
/// clock, or capture timestamps), so tests and offline replays control it fully.
public final class ConnectionTracker {
    public let configuration: ConntrackConfiguration
    /// Behind a pointer for the same reason as the table's state: no run-time exclusivity check per packet.
    private let counterStorage: UnsafeMutablePointer<ConntrackCounters>
    public var counters: ConntrackCounters { counterStorage.pointee }
    /// Called for every created, changed and destroyed connection. Keep it cheap: it runs on the data path.
    @exclusivity(unchecked) public var eventHandler: ((ConntrackEventKind, ConnectionEntry, UInt64) -> Void)?

    let table: ConnectionTable
    /// Copied out of `configuration` so the per-packet path reads plain stored values (no dictionary access).
    private let defaultTimeouts: ConntrackTimeouts
    private let hasZoneTimeouts: Bool
    private let checksumValidation: Bool
    private let liberal: Bool
    /// Connections per zone, indexed by zone: a flat array (256 KiB) so a commit needs no hashing.
    private let zoneCounts: UnsafeMutablePointer<Int32>
    private let hasZoneLimits: Bool
    private let batchKeys: UnsafeMutablePointer<FlowKey>
    @exclusivity(unchecked) private var expiryCursor = 0
    /// Who claimed each extension word, in order.
    public private(set) var extensionNames: [String] = []

    public init(configuration: ConntrackConfiguration = ConntrackConfiguration()) {
        self.configuration = configuration
        self.table = ConnectionTable(
            maxEntries: configuration.maxConnections, seed: configuration.hashSeed,
            initialCapacity: configuration.initialCapacity)
        self.zoneCounts = .allocate(capacity: 65536)
        self.zoneCounts.initialize(repeating: 0, count: 65536)
        self.hasZoneLimits = !configuration.zoneLimits.isEmpty
        self.batchKeys = .allocate(capacity: Self.batchChunk)
        self.counterStorage = .allocate(capacity: 1)
        self.counterStorage.initialize(to: ConntrackCounters())
        self.defaultTimeouts = configuration.timeouts
        self.hasZoneTimeouts = !configuration.zoneTimeouts.isEmpty
        self.checksumValidation = configuration.checksumValidation
        self.liberal = configuration.tcpLiberal
    }

    deinit {
        zoneCounts.deallocate()
        batchKeys.deallocate()
        counterStorage.deinitialize(count: 1)
        counterStorage.deallocate()
    }

    @inline(__always)
    private func timeouts(zone: UInt16) -> ConntrackTimeouts {
        hasZoneTimeouts ? (configuration.zoneTimeouts[zone] ?? defaultTimeouts) : defaultTimeouts
    }

    /// Connections in the table.
    public var count: Int { table.count }
    public func count(zone: UInt16) -> Int { Int(zoneCounts[Int(zone)]) }
    /// Bytes the table holds (entries and index), for the memory figure in metrics and benchmarks.
    public var memoryFootprint: Int { table.memoryFootprint }

    /// Reserves one of the entry's extension words for a stage. Claim at configuration time, not per packet.
    public func claimExtension(name: String) -> ExtensionSlot? {
        guard extensionNames.count < ConnectionExtensions.count else { return nil }
        extensionNames.append(name)
        return ExtensionSlot(index: extensionNames.count - 1)
    }

    // MARK: - Access for later stages

    /// The entry a handle names, or nil when it has been destroyed since.
    public func entry(_ handle: ConnectionHandle) -> ConnectionEntry? {
        guard let index = validIndex(handle) else { return nil }
        return table.entries[index]
    }

    /// Runs `body` on the live entry; nil when the handle is stale.
    @discardableResult
    public func withEntry<R>(_ handle: ConnectionHandle, _ body: (inout ConnectionEntry) throws -> R) rethrows -> R? {
        guard let index = validIndex(handle) else { return nil }
        return try body(&table.entries[index])
    }

    /// Every live entry, for listings and `query-connections`.
    public func forEachEntry(_ body: (ConnectionHandle, ConnectionEntry) throws -> Void) rethrows {
        for index in 0..<table.scanLimit where table.entries[index].isInUse {
            let entry = table.entries[index]
            try body(ConnectionHandle(index: UInt32(index), generation: entry.generation), entry)
        }
    }

    /// Looks a key up without tracking a packet.
    public func lookup(_ key: FlowKey) -> (handle: ConnectionHandle, direction: FlowDirection)? {
        guard let (index, direction) = table.find(key) else { return nil }
        return (ConnectionHandle(index: UInt32(index), generation: table.entries[index].generation), direction)
    }

    @inline(__always)
    private func validIndex(_ handle: ConnectionHandle) -> Int? {
        let index = Int(handle.index)
        guard !handle.isNone, index < table.scanLimit else { return nil }
        // Through the pointer: only the two fields are read, not a copy of the ~200-byte entry.
        let entry = table.entries + index
        guard entry.pointee.isInUse, entry.pointee.generation == handle.generation else { return nil }
        return index
    }

    /// One extension word of the live entry a handle names; nil when the handle is stale. Unlike `withEntry` it
    /// is neither generic nor takes a closure, so the per-packet stages calling it from another module pay for a
    /// plain call.
    public func extensionWord(_ handle: ConnectionHandle, _ slot: ExtensionSlot) -> UInt64? {
        guard let index = validIndex(handle) else { return nil }
        return table.entries[index].extensions[slot]
    }

    /// Sets one extension word of the live entry a handle names (nothing when the handle is stale).
    public func setExtensionWord(_ handle: ConnectionHandle, _ slot: ExtensionSlot, _ value: UInt64) {
        guard let index = validIndex(handle) else { return }
        table.entries[index].extensions[slot] = value
    }

    /// The zone of the live entry a handle names, without copying the entry out.
    public func zone(of handle: ConnectionHandle) -> UInt16? {
        guard let index = validIndex(handle) else { return nil }
        return table.entries[index].key.zone
    }

    // MARK: - Tracking

    /// Tracks one packet (a whole datagram: reassemble fragments first). With `commit` a new connection is
    /// stored; without it a first packet is reported `+new+trk` and forgotten.
    public func track(_ packet: Packet, zone: UInt16 = 0, commit: Bool = true, now: UInt64) -> TrackResult {
        track(packet, zone: zone, commit: commit, now: now, key: nil)
    }

    /// `key`, when given, is `FlowKey(packet:zone:)` computed earlier (by the batch path).
    @inline(__always)
    private func track(_ packet: Packet, zone: UInt16, commit: Bool, now: UInt64, key: FlowKey?) -> TrackResult {
        // Fields are read from `packet.layout` in place: a local copy of the layout was a memcpy per packet.
        guard packet.layout.isIP else { return .untracked(zone: zone) }
        counterStorage.pointee.packets &+= 1
        if packet.layout.isFragment { return invalid(.malformed, zone: zone) }
        if checksumValidation, case .invalid = packet.transportChecksumStatus {
            return invalid(.badChecksum, zone: zone)
        }
        switch packet.layout.transportProtocol {
        case IPProtocol.tcp:
            guard let tcp = packet.tcp else { return invalid(.malformed, zone: zone) }
            return trackTCP(packet, tcp, zone: zone, commit: commit, now: now, key: key)
        case IPProtocol.udp:
            guard let udp = packet.udp else { return invalid(.malformed, zone: zone) }
            if udp.sourcePort == 0 || udp.destinationPort == 0 { return invalid(.portZero, zone: zone) }
            return trackGeneric(packet, zone: zone, commit: commit, now: now, canStart: true, key: key)
        case IPProtocol.icmp where packet.layout.network == .ipv4:
            guard let icmp = packet.icmpv4 else { return invalid(.malformed, zone: zone) }
            if icmp.isError {
                let inner = Result { () throws(ParseError) in try icmp.embeddedPacket() }
                return trackRelated(packet, inner, zone: zone)
            }
            // Only requests start a connection; a reply with no request is invalid.
            let starts = icmp.type == 8 || icmp.type == 13 || icmp.type == 15 || icmp.type == 17
            return trackGeneric(packet, zone: zone, commit: commit, now: now, canStart: starts)
        case IPProtocol.icmpv6 where packet.layout.network == .ipv6:
            guard let icmp = packet.icmpv6 else { return invalid(.malformed, zone: zone) }
            if icmp.isError {
                let inner = Result { () throws(ParseError) in try icmp.embeddedPacket() }
                return trackRelated(packet, inner, zone: zone)
            }
            return trackGeneric(packet, zone: zone, commit: commit, now: now, canStart: icmp.type == 128)
        default:
            return trackGeneric(packet, zone: zone, commit: commit, now: now, canStart: true)
        }
    }

    /// Tracks a batch. Equivalent to calling `track` for each packet in order, but first starts loading the
    /// table lines every packet will touch, so that the cache misses of the batch overlap instead of following
    /// one another. `results` must have room for `packets.count` results.
    public func track(
        batch packets: UnsafeBufferPointer<Packet>, zone: UInt16 = 0, commit: Bool = true, now: UInt64,
        results: UnsafeMutableBufferPointer<TrackResult>
    ) {
        var start = 0
        while start < packets.count {
            let end = min(start + Self.batchChunk, packets.count)
            for index in start..<end where Self.hasFlowKey(packets[index]) {
                let key = FlowKey(packet: packets[index], zone: zone)
                batchKeys[index - start] = key
                table.prefetchSlots(key)
            }
            for index in start..<end where Self.hasFlowKey(packets[index]) {
                table.prefetchEntry(batchKeys[index - start])
            }
            for index in start..<end {
                let key = Self.hasFlowKey(packets[index]) ? batchKeys[index - start] : nil
                results[index] = track(packets[index], zone: zone, commit: commit, now: now, key: key)
            }
            start = end
        }
    }

    /// Packets whose lines are prefetched together; their keys are kept in `batchKeys` between the passes.
    static let batchChunk = 64

    @inline(__always)
    static func hasFlowKey(_ packet: Packet) -> Bool {
        packet.layout.isIP && !packet.layout.isFragment && packet.layout.transportHeaderLength > 0
    }

    @inline(__always)
    private func invalid(_ reason: InvalidReason, zone: UInt16) -> TrackResult {
        counterStorage.pointee.invalid &+= 1
        counterStorage.pointee.invalidByReason[Int(reason.rawValue)] &+= 1
        return .invalid(reason, zone: zone)
    }

    /// Finds a live entry, destroying it first if it has expired.
    @inline(__always)
    private func findLive(_ key: FlowKey, now: UInt64) -> (index: Int, direction: FlowDirection)? {
        guard let found = table.find(key) else { return nil }
        if table.entries[found.index].expiresAt <= now {
            counterStorage.pointee.expired &+= 1
            destroy(found.index, now: now)
            return nil
        }
        return found
    }

    private func create(_ entry: ConnectionEntry, zone: UInt16, now: UInt64) -> Int? {
        if hasZoneLimits, let limit = configuration.zoneLimits[zone], Int(zoneCounts[Int(zone)]) >= limit {
            counterStorage.pointee.refusedZoneLimit &+= 1
            return nil
        }
        guard let index = table.insert(entry) else {
            counterStorage.pointee.refusedGlobalLimit &+= 1
            return nil
        }
        zoneCounts[Int(zone)] += 1
        counterStorage.pointee.created &+= 1
        eventHandler?(.new, table.entries[index], now)
        return index
    }

    private func destroy(_ index: Int, now: UInt64) {
        let zone = table.entries[index].key.zone
        eventHandler?(.destroy, table.entries[index], now)
        table.remove(index)
        zoneCounts[Int(zone)] -= 1
        counterStorage.pointee.destroyed &+= 1
    }

    @inline(__always)
    private func handle(_ index: Int) -> ConnectionHandle {
        ConnectionHandle(index: UInt32(index), generation: table.entries[index].generation)
    }

    @inline(__always)
    private func account(_ index: Int, _ direction: FlowDirection, bytes: Int) {
        if direction == .original {
            table.entries[index].packets.original &+= 1
            table.entries[index].bytes.original &+= UInt64(bytes)
        } else {
            table.entries[index].packets.reply &+= 1
            table.entries[index].bytes.reply &+= UInt64(bytes)
        }
    }

    /// The state a packet of a known connection gets: `est` once a reply has been seen, `rpl` for replies.
    @inline(__always)
    private func result(_ index: Int, _ direction: FlowDirection, zone: UInt16) -> TrackResult {
        let state: CTState
        if direction == .reply {
            state = [.established, .reply, .tracked]
        } else {
            state = table.entries[index].status.contains(.seenReply) ? [.established, .tracked] : [.new, .tracked]
        }
        return TrackResult(state: state, zone: zone, handle: handle(index), direction: direction)
    }

    // MARK: UDP, ICMP queries, other protocols

    private func trackGeneric(
        _ packet: Packet, zone: UInt16, commit: Bool, now: UInt64, canStart: Bool, key precomputed: FlowKey? = nil
    ) -> TrackResult {
        // Not `??`: its autoclosure kept the key builder out of line (and the key went through memory).
        let key: FlowKey
        if let precomputed { key = precomputed } else { key = FlowKey(packet: packet, zone: zone) }
        let timeouts = self.timeouts(zone: zone)
        let isUDP = key.protocolNumber == IPProtocol.udp
        let isICMP = key.isICMP
        if let (index, direction) = findLive(key, now: now) {
            let entry = table.entries + index
            var changed = false
            if direction == .reply && !entry.pointee.status.contains(.seenReply) {
                entry.pointee.status.insert(.seenReply)
                changed = true
            } else if entry.pointee.status.contains(.seenReply) && !entry.pointee.status.contains(.assured) && !isICMP {
                entry.pointee.status.insert(.assured)
                changed = true
            }
            let seconds: UInt32 =
                isUDP
                ? (entry.pointee.status.contains(.seenReply) ? timeouts.udpReplied : timeouts.udpUnreplied)
                : (isICMP ? timeouts.icmp : timeouts.other)
            entry.pointee.expiresAt = now &+ UInt64(seconds) * 1_000_000_000
            account(index, direction, bytes: packet.layout.ipDatagramLength)
            if changed { eventHandler?(.update, table.entries[index], now) }
            return result(index, direction, zone: zone)
        }
        guard canStart else { return invalid(isICMP ? .noConnection : .cannotStart, zone: zone) }
        guard commit else { return TrackResult(state: [.new, .tracked], zone: zone) }
        var entry = ConnectionEntry(key: key)
        entry.createdAt = now
        let seconds = isUDP ? timeouts.udpUnreplied : (isICMP ? timeouts.icmp : timeouts.other)
        entry.expiresAt = now &+ UInt64(seconds) * 1_000_000_000
        guard let index = create(entry, zone: zone, now: now) else {
            return TrackResult(state: [.new, .tracked], zone: zone)
        }
        account(index, .original, bytes: packet.layout.ipDatagramLength)
        return result(index, .original, zone: zone)
    }

    // MARK: ICMP errors

    private func trackRelated(_ packet: Packet, _ inner: Result<EmbeddedPacket, ParseError>, zone: UInt16)
        -> TrackResult
    {
        guard case .success(let embedded) = inner, embedded.hasTransportPrefix || !isPortProtocol(embedded) else {
            return invalid(.malformed, zone: zone)
        }
        let innerKey = FlowKey(embedded: embedded, zone: zone)
        let outer = FlowKey(packet: packet, zone: zone)
        // The quoted packet was sent to whoever sends the error back... its source must be our destination.
        guard innerKey.sourceHigh == outer.destinationHigh, innerKey.sourceLow == outer.destinationLow else {
            return invalid(.unrelatedICMPError, zone: zone)
        }
        guard let (index, direction) = table.find(innerKey) else {
            return invalid(.unrelatedICMPError, zone: zone)
        }
        counterStorage.pointee.related &+= 1
        let errorDirection = direction.opposite
        account(index, errorDirection, bytes: packet.layout.ipDatagramLength)
        var state: CTState = [.related, .tracked]
        if errorDirection == .reply { state.insert(.reply) }
        return TrackResult(state: state, zone: zone, handle: handle(index), direction: errorDirection)
    }

    private func isPortProtocol(_ embedded: EmbeddedPacket) -> Bool {
        let p = embedded.transportProtocol
        return p == IPProtocol.tcp || p == IPProtocol.udp || p == IPProtocol.icmp || p == IPProtocol.icmpv6
    }

    // MARK: TCP

    private func trackTCP(
        _ packet: Packet, _ tcp: TCPHeader, zone: UInt16, commit: Bool, now: UInt64, key precomputed: FlowKey?
    ) -> TrackResult {
        let flags = tcp.flags
        guard TCPTracker.flagsAreValid(flags) else { return invalid(.badFlags, zone: zone) }
        if tcp.sourcePort == 0 || tcp.destinationPort == 0 { return invalid(.portZero, zone: zone) }
        let kind = TCPTracker.classify(flags)
        // Not `??`: its autoclosure kept the key builder out of line (and the key went through memory).
        let key: FlowKey
        if let precomputed { key = precomputed } else { key = FlowKey(packet: packet, zone: zone) }

        if let (index, direction) = findLive(key, now: now) {
            let oldState = table.entries[index].tcpState
            var transition = TCPTracker.transition(from: oldState, kind, direction)
            // A new SYN on a closed connection: the old one is over, start again (port reuse).
            if kind == .syn && direction == .original && (oldState == .timeWait || oldState == .close) {
                counterStorage.pointee.reopened &+= 1
                destroy(index, now: now)
                return startTCP(packet, tcp, kind: kind, key: key, zone: zone, commit: commit, now: now)
            }
            if kind == .rst, transition != .invalid {
                // An RST below what the receiver already acknowledged is a stale or forged one.
                let receiver = direction == .original ? table.entries[index].reply : table.entries[index].original
                if receiver.flags.contains(.maxAckSet) && TCPTracker.before(tcp.sequenceNumber, receiver.maxAck)
                    && !receiver.flags.contains(.liberal) && !configuration.tcpLiberal
                {
                    return invalid(.invalidRST, zone: zone)
                }
            }
            if transition == .invalid { return invalid(.badTransition, zone: zone) }
            let entry = table.entries + index
            if transition != .ignore {
                let verdict = TCPTracker.checkWindow(entry, tcp: tcp, kind: kind, direction: direction)
                if !liberal {
                    switch verdict {
                    case .accept: break
                    case .ignore: transition = .ignore
                    case .invalid: return invalid(.outOfWindow, zone: zone)
                    }
                }
            }
            var changed = false
            if case .to(let newState) = transition, newState != oldState {
                entry.pointee.tcpState = newState
                changed = true
            }
            if direction == .reply && !entry.pointee.status.contains(.seenReply) {
                entry.pointee.status.insert(.seenReply)
                changed = true
            }
            if direction == .original && !entry.pointee.status.contains(.assured)
                && entry.pointee.tcpState == .established && entry.pointee.status.contains(.seenReply)
            {
                entry.pointee.status.insert(.assured)
                changed = true
            }
            entry.pointee.expiresAt = now &+ tcpTimeout(entry, zone: zone)
            account(index, direction, bytes: packet.layout.ipDatagramLength)
            if changed { eventHandler?(.update, entry.pointee, now) }
            return result(index, direction, zone: zone)
        }
        return startTCP(packet, tcp, kind: kind, key: key, zone: zone, commit: commit, now: now)
    }

    private func startTCP(
        _ packet: Packet, _ tcp: TCPHeader, kind: TCPSegmentClass, key: FlowKey, zone: UInt16, commit: Bool,
        now: UInt64
    ) -> TrackResult {
        // Only a SYN starts a connection; a bare ACK may, when mid-stream pickup is on.
        let canStart = kind == .syn || (kind == .ack && configuration.tcpMidStreamPickup)
        guard canStart else { return invalid(.cannotStart, zone: zone) }
        guard commit else { return TrackResult(state: [.new, .tracked], zone: zone) }
        var entry = ConnectionEntry(key: key)
        entry.createdAt = now
        TCPTracker.start(&entry, tcp: tcp, kind: kind, liberal: configuration.tcpLiberal)
        entry.expiresAt = now &+ withUnsafeMutablePointer(to: &entry) { tcpTimeout($0, zone: zone) }
        guard let index = create(entry, zone: zone, now: now) else {
            return TrackResult(state: [.new, .tracked], zone: zone)
        }
        account(index, .original, bytes: packet.layout.ipDatagramLength)
        return result(index, .original, zone: zone)
    }

    /// Takes the entry by pointer: passing the ~200-byte entry by value copied it on every packet.
    @inline(__always)
    private func tcpTimeout(_ entry: UnsafeMutablePointer<ConnectionEntry>, zone: UInt16) -> UInt64 {
        let timeouts = self.timeouts(zone: zone)
        var seconds = timeouts.tcp(entry.pointee.tcpState)
        if entry.pointee.original.flags.contains(.dataUnacknowledged)
            || entry.pointee.reply.flags.contains(.dataUnacknowledged)
        {
            seconds = min(seconds, timeouts.tcpUnacknowledged)
        }
        return UInt64(seconds) * 1_000_000_000
    }

    // MARK: - Expiry

    /// Destroys expired entries, looking at no more than `budget` entries per call so the data path is never
    /// held up for long; call it periodically. Returns the number destroyed.
    @discardableResult
    public func expire(now: UInt64, budget: Int = 4096) -> Int {
        let limit = table.scanLimit
        guard limit > 0 else { return 0 }
        var destroyed = 0
        var examined = 0
        while examined < min(budget, limit) {
            if expiryCursor >= limit { expiryCursor = 0 }
            let index = expiryCursor
            expiryCursor += 1
            examined += 1
            if table.entries[index].isInUse && table.entries[index].expiresAt <= now {
                counterStorage.pointee.expired &+= 1
                destroy(index, now: now)
                destroyed += 1
            }
        }
        return destroyed
    }

    /// Destroys every entry of a zone (or all zones), e.g. when a replica is reset.
    @discardableResult
    public func flush(zone: UInt16? = nil, now: UInt64) -> Int {
        var destroyed = 0
        for index in 0..<table.scanLimit where table.entries[index].isInUse {
            if zone == nil || table.entries[index].key.zone == zone {
                destroy(index, now: now)
                destroyed += 1
            }
        }
        return destroyed
    }
}
