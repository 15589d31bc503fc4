import ColoConntrack
import ColoPacket

/// Names a packet held by a `PacketStore`.
public struct PacketRef: Hashable, Sendable {
    public let index: UInt32
    @inlinable public init(index: UInt32) { self.index = index }
    @inlinable public static var none: PacketRef { PacketRef(index: .max) }
    @inlinable public var isNone: Bool { index == .max }
}

/// Which replica (or the client) a packet came from, as the stages see it.
public enum PacketSource: UInt8, Sendable {
    case client, primary, secondary, other
}

/// Everything a stage knows about a packet besides its bytes.
public struct PacketMetadata: Sendable {
    public var length: Int = 0
    public var linkType: LinkType = .ethernet
    public var layout = PacketLayout()
    /// Whether `layout` describes the bytes (false for packets that did not parse).
    public var parsed = false
    public var parseError: ParseError?
    /// Receive time, nanoseconds (the pipeline's clock).
    public var receivedAt: UInt64 = 0
    public var source: PacketSource = .other
    /// Bytes of virtio-net header the frame arrived with (a socket port with QEMU's vnet_hdr_support), kept apart
    /// from the frame (`PacketStore.vnetHeader`) and forwarded unchanged to ports that take one; 0 for none. The
    /// frame itself (`PacketStore.frame`) never includes it.
    public var vnetHeaderLength: Int = 0
    /// The offloads of a frame read from a TAP device with offloads on (partial checksum, 64 KiB TCP segments);
    /// written back in front of the frame wherever it is sent. Empty for complete frames.
    public var offload = VirtioNetHeader()
    public var track = TrackResult.untracked(zone: 0)
    /// Intrusive link for the queue the packet sits in (compare queues); `.max` when none.
    @usableFromInline var next: UInt32 = .max
    /// For a datagram reassembled by the comparer: the first of the original fragments it stands for (linked
    /// through their `next`); `.max` otherwise.
    @usableFromInline var fragmentChain: UInt32 = .max
}

extension PacketMetadata {
    /// Parsed, TCP over IP, with the whole TCP header in the frame (`layout.isTCP` and
    /// `layout.transportHeaderComplete`), read field by field: the per-packet checks of the stages then make no
    /// copy of the layout and no call across the module boundary.
    @inline(__always)
    var isCompleteTCP: Bool {
        parsed && (layout.network == .ipv4 || layout.network == .ipv6) && layout.transportProtocol == IPProtocol.tcp
            && layout.transportHeaderLength > 0 && layout.transportHeaderComplete
    }
}

/// Fixed pool of packet buffers and their metadata: the only place packet memory comes from.
///
/// Buffers are allocated once, in two size classes (Ethernet-sized and the largest frame QEMU sends, 69632
/// bytes), and recycled, so steady-state packet handling allocates nothing. When a class is exhausted `acquire`
/// returns nil and `refused` counts it: memory is bounded, never grown behind the operator's back.
public final class PacketStore {
    /// Frames up to this size take a small buffer.
    @inlinable public static var smallSize: Int { 2048 }
    /// QEMU's chardev receive limit (4096 + 65536).
    @inlinable public static var largeSize: Int { 69632 }
    /// Distance between buffers of a class: the size plus one cache line. At a power-of-two distance every
    /// buffer's first lines (the headers every stage reads) fell into the same few cache sets, 1 in 32 of them at
    /// 2 KiB, and the hundreds of frames a comparer holds evicted each other's headers.
    /// The line after each buffer's capacity also holds the packet's virtio-net header, when it has one.
    @inlinable static var smallStride: Int { smallSize + 64 }
    @inlinable static var largeStride: Int { largeSize + 64 }
    /// The longest virtio-net header a packet keeps: QEMU's largest (`virtio_net_hdr_v1_hash`, 20 bytes), and
    /// what its chardev framing accepts.
    public static let maximumVnetHeaderLength = 20

    public let smallCount: Int
    public let largeCount: Int
    // Internal for the inlinable accessors below: every stage in every module reaches packets through them.
    @usableFromInline let memory: UnsafeMutableRawPointer
    @usableFromInline let metadata: UnsafeMutablePointer<PacketMetadata>
    private let freeList: UnsafeMutablePointer<UInt32>
    private let counts: UnsafeMutablePointer<Int>  // [freeSmall, freeLarge, refused]

    /// `small` Ethernet-sized buffers and `large` buffers for jumbo/GSO frames.
    public init(small: Int = 8192, large: Int = 64) {
        smallCount = max(1, small)
        largeCount = max(1, large)
        let total = smallCount + largeCount
        memory = .allocate(
            byteCount: smallCount * Self.smallStride + largeCount * Self.largeStride, alignment: 64)
        metadata = .allocate(capacity: total)
        metadata.initialize(repeating: PacketMetadata(), count: total)
        // Free lists: small indices [0, smallCount), large [smallCount, total), each a stack.
        freeList = .allocate(capacity: total)
        counts = .allocate(capacity: 3)
        counts[0] = smallCount
        counts[1] = largeCount
        counts[2] = 0
        // Lay the small stack out in [0, smallCount) and the large one in [smallCount, total).
        for i in 0..<smallCount { freeList[i] = UInt32(smallCount - 1 - i) }
        for i in 0..<largeCount { freeList[smallCount + i] = UInt32(total - 1 - i) }
    }

    deinit {
        metadata.deinitialize(count: smallCount + largeCount)
        metadata.deallocate()
        memory.deallocate()
        freeList.deallocate()
        counts.deallocate()
    }

    /// Packets that could not be stored because the pool was exhausted.
    public var refused: Int { counts[2] }
    /// Buffers in use.
    public var inUse: Int { smallCount + largeCount - counts[0] - counts[1] }

    /// Touches every page of the small buffers once, so that the first frames into each buffer do not each take
    /// a page fault (and a page clear) on the data path. The memory is the store's fixed bound anyway; a proxy
    /// under load reaches it within seconds. Large buffers (up to 64 KiB frames) stay untouched until used.
    public func prefaultSmallBuffers() {
        let bytes = smallCount * Self.smallStride
        var offset = 0
        while offset < bytes {
            memory.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self)
            offset += 4096
        }
    }

    /// A buffer for a frame of `length` bytes, or nil (counted) when none is free.
    @inlinable
    public func acquire(length: Int) -> PacketRef? {
        acquireSlot(length: length)
    }

    @usableFromInline
    func acquireSlot(length: Int) -> PacketRef? {
        if length <= Self.smallSize && counts[0] > 0 {
            counts[0] -= 1
            let index = freeList[counts[0]]
            reset(index, length: length)
            return PacketRef(index: index)
        }
        if length <= Self.largeSize && counts[1] > 0 {
            counts[1] -= 1
            let index = freeList[smallCount + counts[1]]
            reset(index, length: length)
            return PacketRef(index: index)
        }
        counts[2] += 1
        return nil
    }

    /// What `reset` copies: a stored blank copied as a block is cheaper than `PacketMetadata()` built field by
    /// field on the stack and then copied (the narrow stores followed by wide loads stalled store forwarding).
    private let blank = PacketMetadata()

    @inline(__always)
    private func reset(_ index: UInt32, length: Int) {
        metadata[Int(index)] = blank
        metadata[Int(index)].length = length
    }

    /// Copies `bytes` into a new buffer and parses them.
    public func store(
        _ bytes: UnsafeRawBufferPointer, linkType: LinkType, source: PacketSource, receivedAt: UInt64
    ) -> PacketRef? {
        guard let ref = acquire(length: bytes.count) else { return nil }
        buffer(ref).copyMemory(from: bytes)
        metadata[Int(ref.index)].linkType = linkType
        metadata[Int(ref.index)].source = source
        metadata[Int(ref.index)].receivedAt = receivedAt
        parse(ref, linkType: linkType, length: bytes.count)
        return ref
    }

    /// The virtio-net header the frame arrived with (`vnetHeaderLength` bytes, empty for none). It sits in the
    /// 64 bytes after the buffer's capacity (the stride's padding), so the frame starts at offset 0 as every
    /// stage expects, and a packet without one costs nothing.
    @inlinable @inline(__always)
    public func vnetHeader(_ ref: PacketRef) -> UnsafeRawBufferPointer {
        let buffer = buffer(ref)
        return UnsafeRawBufferPointer(
            start: buffer.baseAddress.map { $0 + buffer.count }, count: metadata[Int(ref.index)].vnetHeaderLength)
    }

    /// Keeps `header` as the packet's virtio-net header (an empty one: none). Returns false, keeping none, when
    /// it is longer than `maximumVnetHeaderLength`.
    @discardableResult
    public func setVnetHeader(_ ref: PacketRef, _ header: UnsafeRawBufferPointer) -> Bool {
        guard header.count <= Self.maximumVnetHeaderLength else {
            metadata[Int(ref.index)].vnetHeaderLength = 0
            return false
        }
        let buffer = buffer(ref)
        if let base = buffer.baseAddress, let source = header.baseAddress, header.count > 0 {
            (base + buffer.count).copyMemory(from: source, byteCount: header.count)
        }
        metadata[Int(ref.index)].vnetHeaderLength = header.count
        return true
    }

    /// Parses the frame again (after its bytes changed length or content in a way that moves headers).
    public func reparse(_ ref: PacketRef) {
        parse(ref, linkType: metadata[Int(ref.index)].linkType, length: metadata[Int(ref.index)].length)
    }

    /// `linkType` and `length` come from the caller: `store` has them in registers, and reading back the
    /// metadata fields it had just written stalled on store forwarding.
    @inline(__always)
    private func parse(_ ref: PacketRef, linkType: LinkType, length: Int) {
        let m = metadata + Int(ref.index)
        let bytes = UnsafeRawBufferPointer(start: buffer(ref).baseAddress, count: length)
        do {
            try PacketParser.parse(bytes, linkType: linkType, into: &m.pointee.layout)
            m.pointee.parsed = true
            m.pointee.parseError = nil
        } catch {
            m.pointee.parsed = false
            m.pointee.parseError = error
        }
    }

    /// Returns a buffer to the pool.
    @inlinable
    public func release(_ ref: PacketRef) {
        releaseSlot(ref)
    }

    @usableFromInline
    func releaseSlot(_ ref: PacketRef) {
        let index = Int(ref.index)
        if index < smallCount {
            freeList[counts[0]] = ref.index
            counts[0] += 1
        } else {
            freeList[smallCount + counts[1]] = ref.index
            counts[1] += 1
        }
    }

    /// The whole buffer (its capacity), for writing a frame into.
    @inlinable @inline(__always)
    public func buffer(_ ref: PacketRef) -> UnsafeMutableRawBufferPointer {
        let index = Int(ref.index)
        if index < smallCount {
            return UnsafeMutableRawBufferPointer(start: memory + index * Self.smallStride, count: Self.smallSize)
        }
        let offset = smallCount * Self.smallStride + (index - smallCount) * Self.largeStride
        return UnsafeMutableRawBufferPointer(start: memory + offset, count: Self.largeSize)
    }

    /// The frame's bytes (`length` of them).
    @inlinable @inline(__always)
    public func frame(_ ref: PacketRef) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: buffer(ref)[0..<metadata[Int(ref.index)].length])
    }

    @inlinable @inline(__always)
    public func mutableFrame(_ ref: PacketRef) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: buffer(ref)[0..<metadata[Int(ref.index)].length])
    }

    /// The packet's metadata, in place.
    @inlinable @inline(__always)
    public func metadata(_ ref: PacketRef) -> UnsafeMutablePointer<PacketMetadata> {
        metadata + Int(ref.index)
    }

    /// The parsed packet view (only valid when `metadata(ref).pointee.parsed`).
    @inlinable @inline(__always)
    public func packet(_ ref: PacketRef) -> Packet {
        Packet(bytes: frame(ref), layout: metadata[Int(ref.index)].layout)
    }

    @inline(__always)
    func next(_ ref: PacketRef) -> PacketRef { PacketRef(index: metadata[Int(ref.index)].next) }

    @inline(__always)
    func setNext(_ ref: PacketRef, _ next: PacketRef) { metadata[Int(ref.index)].next = next.index }
}
