/// Buffers for ``TapDevice/readBatch(into:)``: `capacity` slots of `slotSize` bytes, allocated once and reused for
/// every batch, so reading frames allocates nothing.
///
/// Slot contents are valid until the next `readBatch` into the same batch. Not thread-safe.
public final class TapFrameBatch {
    /// The most frames one batch holds.
    public let capacity: Int
    /// The room for one frame, virtio-net header included; frames longer than this are cut short by the kernel.
    public let slotSize: Int
    /// How many frames the last batch read.
    public private(set) var count = 0
    /// The virtio-net header length of the device that filled the batch.
    public private(set) var vnetHeaderLength = 0

    private let storage: UnsafeMutableRawBufferPointer
    private let lengths: UnsafeMutableBufferPointer<Int>

    /// - Parameters:
    ///   - slotSize: 65,536 holds any frame a TAP can send with offloads off, whatever its MTU.
    public init(capacity: Int, slotSize: Int = 65_536) {
        self.capacity = max(1, capacity)
        self.slotSize = max(64, slotSize)
        storage = .allocate(byteCount: self.capacity * self.slotSize, alignment: 16)
        lengths = .allocate(capacity: self.capacity)
        lengths.initialize(repeating: 0)
    }

    deinit {
        storage.deallocate()
        lengths.deallocate()
    }

    /// The bytes read for frame `index`, virtio-net header included.
    public subscript(index: Int) -> UnsafeRawBufferPointer {
        precondition(index >= 0 && index < count, "frame \(index) of a batch of \(count)")
        return UnsafeRawBufferPointer(rebasing: storage[index * slotSize..<index * slotSize + lengths[index]])
    }

    /// Frame `index` without its virtio-net header: the Ethernet frame (TAP) or IP packet (TUN).
    public func frame(at index: Int) -> UnsafeRawBufferPointer {
        let whole = self[index]
        let header = min(vnetHeaderLength, whole.count)
        return UnsafeRawBufferPointer(rebasing: whole[header...])
    }

    func reset(vnetHeaderLength: Int) {
        count = 0
        self.vnetHeaderLength = vnetHeaderLength
    }

    func slot(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: storage[index * slotSize..<(index + 1) * slotSize])
    }

    func append(length: Int) {
        lengths[count] = length
        count += 1
    }
}
