import CColoLinux

/// Open-addressing hash table from flow keys to connection entries. Knows nothing about protocols.
///
/// Each entry is indexed twice (original and reply key) in a slot array with linear probing and backward-shift
/// deletion (no tombstones, so lookups never slow down with churn). Entries live in one contiguous array with a
/// free list; both arrays grow by doubling up to the configured maximum and never shrink, so memory is bounded
/// by `maxEntries` and a lookup costs one slot probe plus one entry read.
final class ConnectionTable {
    struct Slot {
        /// Low 32 bits of the key's hash; its low bits give the home position.
        var hash: UInt32
        /// `entryIndex << 1 | direction`, or `empty`.
        var reference: UInt32

        static let empty: UInt32 = .max
    }

    /// The mutable fields live behind a pointer: stored `var`s of a class are checked for exclusive access at
    /// run time on every read and write, which on this path cost more than the lookup itself.
    struct State {
        var entries: UnsafeMutablePointer<ConnectionEntry>
        var entryCapacity: Int
        var count = 0
        var slots: UnsafeMutablePointer<Slot>
        var slotMask: Int
        var freeHead: UInt32 = .max
        /// Entries below this index have been handed out at least once.
        var highWater = 0
    }

    let maxEntries: Int
    let seed: UInt64
    private let state: UnsafeMutablePointer<State>

    var entries: UnsafeMutablePointer<ConnectionEntry> { state.pointee.entries }
    var entryCapacity: Int { state.pointee.entryCapacity }
    var count: Int { state.pointee.count }
    private var slots: UnsafeMutablePointer<Slot> { state.pointee.slots }
    private var slotMask: Int { state.pointee.slotMask }
    private var highWater: Int {
        get { state.pointee.highWater }
        set { state.pointee.highWater = newValue }
    }
    private var freeHead: UInt32 {
        get { state.pointee.freeHead }
        set { state.pointee.freeHead = newValue }
    }

    init(maxEntries: Int, seed: UInt64, initialCapacity: Int = 1024) {
        self.maxEntries = max(1, min(maxEntries, Int(UInt32.max >> 2)))
        self.seed = seed
        let capacity = min(self.maxEntries, max(16, initialCapacity))
        let slotCount = Self.slotCount(for: capacity)
        let slots = LargeAllocation.allocate(Slot.self, capacity: slotCount)
        slots.initialize(repeating: Slot(hash: 0, reference: Slot.empty), count: slotCount)
        state = .allocate(capacity: 1)
        state.initialize(
            to: State(
                entries: LargeAllocation.allocate(ConnectionEntry.self, capacity: capacity), entryCapacity: capacity,
                slots: slots, slotMask: slotCount - 1))
    }

    deinit {
        entries.deinitialize(count: highWater)
        LargeAllocation.deallocate(entries, capacity: entryCapacity)
        LargeAllocation.deallocate(slots, capacity: slotMask + 1)
        state.deinitialize(count: 1)
        state.deallocate()
    }

    /// Two keys per entry at a load factor of at most one half.
    private static func slotCount(for entries: Int) -> Int {
        var n = 16
        while n < entries * 4 { n <<= 1 }
        return n
    }

    var isFull: Bool { count >= maxEntries }

    /// Bytes held by the table's two arrays.
    var memoryFootprint: Int {
        entryCapacity * MemoryLayout<ConnectionEntry>.stride + (slotMask + 1) * MemoryLayout<Slot>.stride
    }

    @inline(__always)
    func hash(_ key: FlowKey) -> UInt32 { UInt32(truncatingIfNeeded: key.tableHash(seed: seed)) }

    /// Starts loading the slot lines `key` and its reverse hash to (batch pass 1).
    @inline(__always)
    func prefetchSlots(_ key: FlowKey) {
        CColoLinux_prefetch(slots + (Int(hash(key)) & slotMask))
        CColoLinux_prefetch(slots + (Int(hash(key.reversed())) & slotMask))
    }

    /// Starts loading the entry `key`'s home slot points at, or the entry a new connection would take (batch
    /// pass 2, once the slot lines are in cache).
    @inline(__always)
    func prefetchEntry(_ key: FlowKey) {
        let h = hash(key)
        let slot = slots[Int(h) & slotMask]
        if slot.reference != Slot.empty && slot.hash == h {
            CColoLinux_prefetch(entries + Int(slot.reference >> 1))
        } else if freeHead != .max {
            CColoLinux_prefetchForWrite(entries + Int(freeHead))
        } else if highWater < entryCapacity {
            CColoLinux_prefetchForWrite(entries + highWater)
        }
    }

    /// Finds the entry whose original or reply key is `key`.
    @inline(__always)
    func find(_ key: FlowKey) -> (index: Int, direction: FlowDirection)? {
        let h = hash(key)
        var i = Int(h) & slotMask
        while true {
            let slot = slots[i]
            if slot.reference == Slot.empty { return nil }
            if slot.hash == h {
                let index = Int(slot.reference >> 1)
                let direction = FlowDirection(rawValue: UInt8(slot.reference & 1)) ?? .original
                let stored = entries[index].key
                if direction == .original ? stored == key : stored.reversed() == key {
                    return (index, direction)
                }
            }
            i = (i + 1) & slotMask
        }
    }

    /// Stores a new entry under its original and reply keys. Returns nil when the table is at `maxEntries`.
    func insert(_ entry: ConnectionEntry) -> Int? {
        guard count < maxEntries else { return nil }
        if freeHead == .max && highWater == entryCapacity { grow() }
        let index: Int
        if freeHead != .max {
            index = Int(freeHead)
            freeHead = entries[index].nextFree
            let generation = entries[index].generation
            entries[index] = entry
            entries[index].generation = generation
        } else {
            index = highWater
            (entries + index).initialize(to: entry)
            highWater += 1
        }
        entries[index].status.insert(.inUse)
        entries[index].nextFree = .max
        state.pointee.count += 1
        place(hash: hash(entry.key), reference: UInt32(index) << 1)
        place(hash: hash(entry.key.reversed()), reference: UInt32(index) << 1 | 1)
        return index
    }

    /// Removes an entry from both indexes and frees it; its generation changes so old handles go stale.
    func remove(_ index: Int) {
        let key = entries[index].key
        unplace(hash: hash(key), reference: UInt32(index) << 1)
        unplace(hash: hash(key.reversed()), reference: UInt32(index) << 1 | 1)
        entries[index].status = []
        entries[index].generation &+= 1
        entries[index].nextFree = freeHead
        freeHead = UInt32(index)
        state.pointee.count -= 1
    }

    /// Indices below which entries may be in use (for scans).
    var scanLimit: Int { highWater }

    private func place(hash h: UInt32, reference: UInt32) {
        var i = Int(h) & slotMask
        while slots[i].reference != Slot.empty { i = (i + 1) & slotMask }
        slots[i] = Slot(hash: h, reference: reference)
    }

    private func unplace(hash h: UInt32, reference: UInt32) {
        var i = Int(h) & slotMask
        while slots[i].reference != reference {
            if slots[i].reference == Slot.empty { return }
            i = (i + 1) & slotMask
        }
        // Backward-shift: pull later members of the probe run into the hole so no lookup stops early.
        var hole = i
        var j = (i + 1) & slotMask
        while slots[j].reference != Slot.empty {
            let home = Int(slots[j].hash) & slotMask
            // Move j into the hole unless its home lies cyclically in (hole, j].
            let distanceToJ = (j - home) & slotMask
            let distanceToHole = (hole - home) & slotMask
            if distanceToHole < distanceToJ {
                slots[hole] = slots[j]
                hole = j
            }
            j = (j + 1) & slotMask
        }
        slots[hole] = Slot(hash: 0, reference: Slot.empty)
    }

    private func grow() {
        let newCapacity = min(maxEntries, entryCapacity * 2)
        guard newCapacity > entryCapacity else { return }
        let newEntries = LargeAllocation.allocate(ConnectionEntry.self, capacity: newCapacity)
        newEntries.moveInitialize(from: entries, count: highWater)
        LargeAllocation.deallocate(entries, capacity: entryCapacity)
        state.pointee.entries = newEntries
        state.pointee.entryCapacity = newCapacity
        let newSlotCount = Self.slotCount(for: newCapacity)
        if newSlotCount > slotMask + 1 {
            LargeAllocation.deallocate(slots, capacity: slotMask + 1)
            state.pointee.slots = LargeAllocation.allocate(Slot.self, capacity: newSlotCount)
            slots.initialize(repeating: Slot(hash: 0, reference: Slot.empty), count: newSlotCount)
            state.pointee.slotMask = newSlotCount - 1
            for index in 0..<highWater where entries[index].isInUse {
                place(hash: hash(entries[index].key), reference: UInt32(index) << 1)
                place(hash: hash(entries[index].key.reversed()), reference: UInt32(index) << 1 | 1)
            }
        }
    }
}
