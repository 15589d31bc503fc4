/// A first-in, first-out queue of packet refs in fixed memory: the comparer's output lists (`released`,
/// `dropped`).
///
/// A ref names one store buffer and sits in at most one queue at a time, so a queue never holds more refs than
/// its store has buffers; that is its capacity, allocated once. Appending and popping touch no reference counts
/// and take no exclusivity checks (the Swift arrays these replaced cost both on every drain), and a consumer that
/// pops until empty sees every ref in order even when handling one appends more (a release that reaches the same
/// comparer again).
///
/// A struct around manually managed memory: the owner calls `deallocate()` once, and copies must not outlive it.
public struct PacketRefQueue {
    @usableFromInline let base: UnsafeMutablePointer<PacketRef>
    @usableFromInline let capacity: Int
    /// Slot of the oldest ref.
    @usableFromInline var head = 0
    @usableFromInline var stored = 0

    /// Room for `capacity` refs (at least one).
    public init(capacity: Int) {
        self.capacity = max(1, capacity)
        base = .allocate(capacity: self.capacity)
    }

    public func deallocate() { base.deallocate() }

    @inlinable public var isEmpty: Bool { stored == 0 }
    @inlinable public var count: Int { stored }

    /// Adds `ref` at the tail; false (nothing stored) when full, which a queue sized by its store never is.
    @inlinable @discardableResult
    public mutating func append(_ ref: PacketRef) -> Bool {
        guard stored < capacity else { return false }
        var slot = head + stored
        if slot >= capacity { slot -= capacity }
        base[slot] = ref
        stored += 1
        return true
    }

    /// The oldest ref, removed; nil when empty.
    @inlinable
    public mutating func popFirst() -> PacketRef? {
        guard stored > 0 else { return nil }
        let ref = base[head]
        head += 1
        if head == capacity { head = 0 }
        stored -= 1
        if stored == 0 { head = 0 }
        return ref
    }
}
