import ColoPacket

/// Puts IPv4 and IPv6 fragments back together so that the tracker and the comparer see whole datagrams.
///
/// Memory is bounded three ways: at most `maxDatagrams` datagrams, at most `maxFragmentsPerDatagram` fragments
/// each, and at most `maxBufferBytes` of buffers. When the table or the budget is full the *new* datagram is
/// refused rather than an old one evicted: evicting would let a flood of bogus first fragments flush every
/// honest datagram in progress, while refusing costs at most one timeout of new datagrams. (Linux's
/// `ipfrag_high_thresh` behaves the same way.)
///
/// Time is whatever the caller passes as `now` (nanoseconds, not going backwards); nothing reads a clock.
/// Call `expire(now:_:)` regularly (once per batch) to collect datagrams that ran out of time.
///
/// In steady state nothing is allocated per fragment: buffers come from a pool that grows lazily up to the
/// limits and is reused. Views handed out (`ReassembledDatagram`, `FragmentTokens`) are valid until the next
/// call. Not thread-safe: one reassembler per thread (or per zone set) of the data path.
public final class FragmentReassembler {
    public let configuration: Configuration
    public private(set) var counters = FragmentCounters()

    /// Room before the data for the first fragment's header: fits any IPv4 header and an IPv6 header with a
    /// few extension headers, so the header rarely has to push the data along.
    static let headerRoom = 64
    /// Smallest buffer worth allocating: a typical two-fragment datagram fits without a second allocation.
    static let minimumBufferCapacity = 2048

    private let slots: UnsafeMutablePointer<ReassemblySlot>
    /// Entries of `slots` initialised so far; the pool grows lazily up to `maxDatagrams`.
    private var slotCount = 0
    /// Stack of idle slot indices; the top was used last, so its buffer is the most likely to be big enough.
    private let idleSlots: UnsafeMutablePointer<Int32>
    private var idleCount = 0
    /// Bytes of buffers held by idle slots: what can be given back when the budget is short.
    private var idleBufferBytes = 0
    private var table: [FragmentKey: Int32] = [:]
    private var oldest: Int32 = -1
    private var newest: Int32 = -1
    /// Token storage for refusals that never got a slot.
    private let loneToken: UnsafeMutablePointer<UInt64>
    private let maxBufferCapacity: Int

    public init(configuration: Configuration = Configuration()) {
        let c = configuration.clamped
        self.configuration = c
        slots = .allocate(capacity: c.maxDatagrams)
        idleSlots = .allocate(capacity: c.maxDatagrams)
        loneToken = .allocate(capacity: 1)
        loneToken.initialize(to: 0)
        // IPv6 may carry 40 bytes of fixed header on top of the limited payload length; the header room may
        // be replaced by a longer unfragmentable part, whose length the size limit already bounds.
        maxBufferCapacity = max(Self.headerRoom, 40) + c.maxReassembledSize + 40
    }

    deinit {
        for i in 0..<slotCount {
            slots[i].buffer?.deallocate()
            slots[i].tokens.deallocate()
            slots[i].spans.deallocate()
        }
        slots.deinitialize(count: slotCount)
        slots.deallocate()
        idleSlots.deallocate()
        loneToken.deallocate()
    }

    /// Datagrams in reassembly.
    public var datagramCount: Int { table.count }

    /// When the oldest datagram in reassembly runs out of time, or nil when none is held.
    public var nextExpiry: UInt64? {
        oldest < 0 ? nil : slots[Int(oldest)].created &+ configuration.timeout
    }

    /// Offers one packet to reassembly.
    ///
    /// - Parameters:
    ///   - bytes: the packet as received (link header allowed: `layout` says where the IP header is). Only
    ///     read during the call; the fragment's bytes are copied.
    ///   - layout: `bytes` parsed by `PacketParser`.
    ///   - zone: keeps apart datagrams that must not meet (the two replicas' copies of the same fragments).
    ///   - now: the caller's clock, in nanoseconds.
    ///   - token: the caller's handle for this fragment, handed back when its datagram completes or is dropped.
    public func submit(
        _ bytes: UnsafeRawBufferPointer, layout: PacketLayout, zone: UInt16, now: UInt64, token: UInt64
    ) -> FragmentResult {
        guard layout.isFragment, layout.network == .ipv4 || layout.network == .ipv6 else { return .notAFragment }
        // An IPv6 atomic fragment is a whole datagram and must not join any queue (RFC 6946).
        if layout.network == .ipv6 && layout.fragmentOffset == 0 && !layout.moreFragments { return .notAFragment }
        guard let fragment = FragmentView(bytes, layout: layout, zone: zone) else {
            return refuseAlone(.malformed, token: token, zone: zone)
        }

        let slot: Int
        if let found = table[fragment.key] {
            slot = Int(found)
            if hasExpired(slot, now: now) { return drop(slot, .timedOut, adding: token) }
            if let problem = problem(with: fragment, in: slot) { return drop(slot, problem, adding: token) }
        } else {
            if let problem = problem(with: fragment, in: nil) { return refuseAlone(problem, token: token, zone: zone) }
            guard table.count < configuration.maxDatagrams, let fresh = takeIdleSlot() else {
                return refuseAlone(.tableFull, token: token, zone: zone)
            }
            slot = fresh
            open(slot, key: fragment.key, now: now)
        }
        guard copy(fragment, from: bytes, into: slot) else { return drop(slot, .memoryFull, adding: token) }
        record(fragment, token: token, in: slot)
        return slots[slot].isComplete ? finish(slot) : .held
    }

    /// Drops every datagram whose earliest fragment arrived `timeout` or more ago, handing its tokens to
    /// `onExpired` (valid during the call only; do not call back into the reassembler from it).
    ///
    /// - Returns: the number of datagrams expired.
    @discardableResult
    public func expire(now: UInt64, _ onExpired: (FragmentTokens) -> Void = { _ in }) -> Int {
        var expired = 0
        while oldest >= 0 && hasExpired(Int(oldest), now: now) {
            let slot = Int(oldest)
            let count = slots[slot].fragmentCount
            counters.expired &+= 1
            counters.droppedFragments &+= UInt64(count)
            onExpired(FragmentTokens(base: slots[slot].tokens, count: count, zone: slots[slot].key.zone))
            close(slot)
            expired += 1
        }
        return expired
    }

    /// Gives up every datagram in reassembly (shutdown, reconfiguration), handing each one's tokens to
    /// `onDropped`. Not counted as expired or dropped: nothing went wrong with the traffic.
    public func flush(_ onDropped: (FragmentTokens) -> Void = { _ in }) {
        while oldest >= 0 {
            let slot = Int(oldest)
            onDropped(
                FragmentTokens(base: slots[slot].tokens, count: slots[slot].fragmentCount, zone: slots[slot].key.zone))
            close(slot)
        }
    }

    // MARK: - Checks

    private func hasExpired(_ slot: Int, now: UInt64) -> Bool {
        let created = slots[slot].created
        return now >= created && now - created >= configuration.timeout
    }

    /// The reason this fragment breaks its datagram, or nil when it fits.
    private func problem(with fragment: FragmentView, in slot: Int?) -> FragmentDropReason? {
        if fragment.more {
            if fragment.dataLength < configuration.minimumFragmentSize { return .tooSmall }
            // Only the last fragment may end off an 8-byte boundary: the next offset could not be expressed.
            if fragment.dataLength % 8 != 0 { return .malformed }
        }
        guard let slot else {
            return fragment.limitedHeaderLength + fragment.end > configuration.maxReassembledSize ? .oversize : nil
        }
        let s = slots[slot]
        // The first fragment's header is the one the datagram will carry; until it is known, judge by this one's.
        let header =
            fragment.isFirst || s.headerLength == 0
            ? fragment.limitedHeaderLength : (s.key.isIPv6 ? s.headerLength - 40 : s.headerLength)
        if header + max(fragment.end, s.maxEnd) > configuration.maxReassembledSize { return .oversize }
        if s.fragmentCount >= configuration.maxFragmentsPerDatagram { return .tooManyFragments }
        if !fragment.more {
            if s.totalEnd >= 0 || fragment.end < s.maxEnd { return .overlap }
        } else if s.totalEnd >= 0 && fragment.end > s.totalEnd {
            return .overlap
        }
        let start = Int32(truncatingIfNeeded: fragment.offset)
        let end = Int32(truncatingIfNeeded: fragment.end)
        for i in 0..<s.fragmentCount {
            let span = s.spans[i]
            if start < span.end && span.start < end { return .overlap }
            // Two empty ranges at one place are a duplicate too, though they share no byte.
            if start == end && span.start == start && span.end == end { return .overlap }
        }
        return nil
    }

    // MARK: - Storing

    /// Copies the fragment's data (and, for the first fragment, its header) into the slot's buffer.
    private func copy(_ fragment: FragmentView, from bytes: UnsafeRawBufferPointer, into slot: Int) -> Bool {
        guard let source = bytes.baseAddress else { return false }
        let oldStart = slots[slot].dataStart
        let newStart = fragment.isFirst ? max(oldStart, fragment.headerLength) : oldStart
        let newMaxEnd = max(slots[slot].maxEnd, fragment.end)
        guard let buffer = reserve(newStart + newMaxEnd, in: slot) else { return false }
        if newStart != oldStart {
            // An unusually long IPv6 header chain: make room for it in front of the data already held.
            (buffer + newStart).copyMemory(from: buffer + oldStart, byteCount: slots[slot].maxEnd)
            slots[slot].dataStart = newStart
        }
        if fragment.isFirst {
            (buffer + newStart - fragment.headerLength).copyMemory(
                from: source + fragment.networkOffset, byteCount: fragment.headerLength)
            slots[slot].headerLength = fragment.headerLength
            slots[slot].nextHeaderField = fragment.nextHeaderField
        }
        (buffer + newStart + fragment.offset).copyMemory(
            from: source + fragment.dataStart, byteCount: fragment.dataLength)
        slots[slot].maxEnd = newMaxEnd
        return true
    }

    private func record(_ fragment: FragmentView, token: UInt64, in slot: Int) {
        let index = slots[slot].fragmentCount
        slots[slot].tokens[index] = token
        slots[slot].spans[index] = FragmentSpan(
            start: Int32(truncatingIfNeeded: fragment.offset), end: Int32(truncatingIfNeeded: fragment.end))
        slots[slot].fragmentCount = index + 1
        slots[slot].dataBytes += fragment.dataLength
        slots[slot].mru = max(slots[slot].mru, fragment.size)
        if !fragment.more { slots[slot].totalEnd = fragment.end }
        counters.accepted &+= 1
        counters.currentBytes &+= UInt64(fragment.dataLength)
    }

    /// Makes the slot's buffer hold at least `needed` bytes, keeping what it holds; nil when the budget is spent.
    private func reserve(_ needed: Int, in slot: Int) -> UnsafeMutableRawPointer? {
        let old = slots[slot].capacity
        if needed <= old, let buffer = slots[slot].buffer { return buffer }
        guard needed <= maxBufferCapacity else { return nil }
        // Doubling keeps a datagram that arrives in order from reallocating at every fragment.
        var capacity = max(Self.minimumBufferCapacity, old * 2)
        while capacity < needed { capacity *= 2 }
        capacity = min(capacity, maxBufferCapacity)
        if !makeRoom(for: capacity - old) {
            capacity = needed
            guard makeRoom(for: capacity - old) else { return nil }
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        if let previous = slots[slot].buffer {
            let used = min(old, slots[slot].dataStart + slots[slot].maxEnd)
            buffer.copyMemory(from: previous, byteCount: used)
            previous.deallocate()
        }
        slots[slot].buffer = buffer
        slots[slot].capacity = capacity
        counters.bufferBytes &+= UInt64(capacity - old)
        return buffer
    }

    /// Frees idle buffers, least recently used first, until `growth` more bytes fit the budget.
    private func makeRoom(for growth: Int) -> Bool {
        let limit = configuration.maxBufferBytes
        var held = Int(counters.bufferBytes)
        if held + growth <= limit { return true }
        guard held - idleBufferBytes + growth <= limit else { return false }
        var i = 0
        while i < idleCount && held + growth > limit {
            let slot = Int(idleSlots[i])
            if let buffer = slots[slot].buffer {
                let capacity = slots[slot].capacity
                buffer.deallocate()
                slots[slot].buffer = nil
                slots[slot].capacity = 0
                held -= capacity
                idleBufferBytes -= capacity
                counters.bufferBytes &-= UInt64(capacity)
            }
            i += 1
        }
        return held + growth <= limit
    }

    // MARK: - Finishing

    /// Turns the held header and data into one valid datagram and hands it out.
    private func finish(_ slot: Int) -> FragmentResult {
        let s = slots[slot]
        guard let buffer = s.buffer else { return drop(slot, .malformed, adding: nil) }
        let total = s.headerLength + s.totalEnd
        let datagram = UnsafeMutableRawBufferPointer(start: buffer + s.dataStart - s.headerLength, count: total)
        if s.key.isIPv6 {
            datagram.storeBytes(of: UInt16(truncatingIfNeeded: total - 40).bigEndian, toByteOffset: 4, as: UInt16.self)
            datagram[s.nextHeaderField] = s.key.proto
        } else {
            datagram.storeBytes(of: UInt16(truncatingIfNeeded: total).bigEndian, toByteOffset: 2, as: UInt16.self)
            // Offset and MF go; DF and the reserved bit stay as the sender set them.
            let flags = UInt16(bigEndian: datagram.loadUnaligned(fromByteOffset: 6, as: UInt16.self)) & 0xC000
            datagram.storeBytes(of: flags.bigEndian, toByteOffset: 6, as: UInt16.self)
            datagram.storeBytes(of: UInt16(0), toByteOffset: 10, as: UInt16.self)
            let header = UnsafeRawBufferPointer(rebasing: datagram[0..<s.headerLength])
            let checksum = Checksum.finish(Checksum.sum(header))
            datagram.storeBytes(of: checksum.bigEndian, toByteOffset: 10, as: UInt16.self)
        }
        let bytes = UnsafeRawBufferPointer(datagram)
        let layout: PacketLayout
        do {
            layout = try PacketParser.parse(bytes, linkType: s.key.isIPv6 ? .rawIPv6 : .rawIPv4)
        } catch {
            return drop(slot, .malformed, adding: nil)
        }
        let result = ReassembledDatagram(
            bytes: bytes, layout: layout,
            tokens: FragmentTokens(base: s.tokens, count: s.fragmentCount, zone: s.key.zone), mru: s.mru,
            zone: s.key.zone)
        counters.completed &+= 1
        // The buffer goes back to the pool but is not touched before the next call, so the views stay valid.
        close(slot)
        return .completed(result)
    }

    /// Gives up the slot's datagram, with `token` (the fragment that broke it) added to the list handed back.
    private func drop(_ slot: Int, _ reason: FragmentDropReason, adding token: UInt64?) -> FragmentResult {
        var count = slots[slot].fragmentCount
        if let token {
            slots[slot].tokens[count] = token
            count += 1
        }
        countDrop(reason, fragments: count)
        let tokens = FragmentTokens(base: slots[slot].tokens, count: count, zone: slots[slot].key.zone)
        close(slot)
        return .dropped(reason, tokens)
    }

    /// Refuses a fragment that has no datagram in reassembly.
    private func refuseAlone(_ reason: FragmentDropReason, token: UInt64, zone: UInt16) -> FragmentResult {
        loneToken.pointee = token
        countDrop(reason, fragments: 1)
        return .dropped(reason, FragmentTokens(base: loneToken, count: 1, zone: zone))
    }

    private func countDrop(_ reason: FragmentDropReason, fragments: Int) {
        counters.droppedFragments &+= UInt64(fragments)
        switch reason {
        case .tooSmall: counters.tooSmall &+= 1
        case .overlap: counters.overlap &+= 1
        case .oversize: counters.oversize &+= 1
        case .tooManyFragments: counters.tooManyFragments &+= 1
        case .malformed: counters.malformed &+= 1
        case .tableFull, .memoryFull: counters.purged &+= 1
        case .timedOut: counters.expired &+= 1
        }
    }

    // MARK: - Slots

    private func takeIdleSlot() -> Int? {
        if idleCount > 0 {
            idleCount -= 1
            let slot = Int(idleSlots[idleCount])
            idleBufferBytes -= slots[slot].capacity
            return slot
        }
        guard slotCount < configuration.maxDatagrams else { return nil }
        let capacity = configuration.maxFragmentsPerDatagram + 1
        let tokens = UnsafeMutablePointer<UInt64>.allocate(capacity: capacity)
        tokens.initialize(repeating: 0, count: capacity)
        let spans = UnsafeMutablePointer<FragmentSpan>.allocate(capacity: capacity)
        spans.initialize(repeating: FragmentSpan(start: 0, end: 0), count: capacity)
        let key = FragmentKey(
            sourceHigh: 0, sourceLow: 0, destinationHigh: 0, destinationLow: 0, identification: 0, zone: 0,
            isIPv6: false, proto: 0)
        (slots + slotCount).initialize(to: ReassemblySlot(buffer: nil, tokens: tokens, spans: spans, key: key))
        slotCount += 1
        return slotCount - 1
    }

    /// Starts a datagram in a slot just taken from the pool, as the newest in the expiry order.
    private func open(_ slot: Int, key: FragmentKey, now: UInt64) {
        slots[slot].key = key
        slots[slot].created = now
        slots[slot].fragmentCount = 0
        slots[slot].dataStart = Self.headerRoom
        slots[slot].headerLength = 0
        slots[slot].nextHeaderField = 0
        slots[slot].totalEnd = -1
        slots[slot].maxEnd = 0
        slots[slot].dataBytes = 0
        slots[slot].mru = 0
        slots[slot].older = newest
        slots[slot].newer = -1
        let index = Int32(truncatingIfNeeded: slot)
        if newest >= 0 { slots[Int(newest)].newer = index } else { oldest = index }
        newest = index
        table[key] = index
        counters.currentDatagrams &+= 1
    }

    /// Ends a datagram and returns its slot, buffers kept, to the pool.
    private func close(_ slot: Int) {
        table.removeValue(forKey: slots[slot].key)
        let older = slots[slot].older
        let newer = slots[slot].newer
        if older >= 0 { slots[Int(older)].newer = newer } else { oldest = newer }
        if newer >= 0 { slots[Int(newer)].older = older } else { newest = older }
        counters.currentDatagrams &-= 1
        counters.currentBytes &-= UInt64(slots[slot].dataBytes)
        idleSlots[idleCount] = Int32(truncatingIfNeeded: slot)
        idleCount += 1
        idleBufferBytes += slots[slot].capacity
    }
}
