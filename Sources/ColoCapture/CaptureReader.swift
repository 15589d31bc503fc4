import ColoPacket

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Streams the packets of a pcap or pcapng file, one record per `next()`, without loading the file.
///
/// The buffer holds at most one record beyond the read-ahead chunk, so memory is bounded by
/// `maximumRecordLength` whatever the file size; a record's bytes are lent out and stay valid only until the next
/// call. A class, not a struct, so that buffer can never be aliased by a copy; `deinit` closes the file.
public final class CaptureReader {
    /// Large enough for any jumbo frame or GSO super-packet, small enough that a corrupt length cannot make us
    /// allocate gigabytes. It matches the snapshot length tcpdump and tshark use by default.
    public static let defaultMaximumRecordLength = 262_144

    public let path: String
    public let maximumRecordLength: Int
    public internal(set) var format: CaptureFormat
    /// The interfaces of the current pcapng section (a new section replaces them), or pcap's single interface.
    public internal(set) var interfaces: [CaptureInterface] = []

    static let readAheadChunk = 65_536
    /// pcapng blocks carry options after the packet; this allows them room without trusting the length blindly.
    static let blockOptionsAllowance = 65_536
    /// A file of tiny Interface Description blocks must not grow the interface table without bound.
    static let maximumInterfacesPerSection = 65_536

    let fileDescriptor: Int32
    var storage: UnsafeMutableRawPointer
    var capacity: Int
    /// Unconsumed bytes are storage[head..<tail].
    var head = 0
    var tail = 0
    /// File offset of storage[head], for error messages.
    var headFileOffset = 0
    var reachedEndOfFile = false
    var recordsRead = 0
    /// Whether the file's integers are in the opposite byte order to the host's.
    var byteSwapped = false
    var failure: CaptureError?
    /// pcap's one link type, kept apart from `interfaces` so the per-record path does no array access.
    var pcapLinkType: LinkType = .ethernet

    /// Opens the file and reads its header (the pcap global header or the first pcapng Section Header).
    public init(path: String, maximumRecordLength: Int = CaptureReader.defaultMaximumRecordLength)
        throws(CaptureError)
    {
        do {
            fileDescriptor = try SystemCall.openFile(path, flags: O_RDONLY)
        } catch {
            throw .cannotOpen(path: path, errno: error.errno)
        }
        self.path = path
        // Capped so the limit arithmetic cannot overflow; no real packet comes near a gigabyte.
        self.maximumRecordLength = min(max(maximumRecordLength, 1), 1 << 30)
        capacity = Self.readAheadChunk
        storage = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        format = .pcapng
        try readFileHeader()
    }

    deinit {
        try? SystemCall.closeFile(fileDescriptor)
        storage.deallocate()
    }

    /// Returns the next packet, or nil at a clean end of file (the file ends exactly after a record).
    ///
    /// The returned bytes are valid until the next call. After an error every later call throws the same error:
    /// once a length field is wrong nothing after it can be trusted.
    public func next() throws(CaptureError) -> CaptureRecord? {
        if let failure { throw failure }
        do throws(CaptureError) {
            switch format {
            case .pcap(let resolution): return try nextPcapRecord(resolution: resolution)
            case .pcapng: return try nextPcapngRecord()
            }
        } catch {
            failure = error
            throw error
        }
    }

    /// Reads a whole file into owned copies; for tests and tools, not for replaying large captures.
    public static func readAll(path: String, maximumRecordLength: Int = defaultMaximumRecordLength)
        throws(CaptureError) -> [OwnedRecord]
    {
        let reader = try CaptureReader(path: path, maximumRecordLength: maximumRecordLength)
        var records: [OwnedRecord] = []
        while let record = try reader.next() {
            records.append(OwnedRecord(record))
        }
        return records
    }

    /// How many bytes the internal buffer holds now; exposed so tests can check that it stays bounded.
    var bufferCapacity: Int { capacity }

    private func readFileHeader() throws(CaptureError) {
        let available = try fill(4)
        if available == 0 { throw .emptyFile(path: path) }
        if available < 4 {
            throw .truncatedFileHeader(path: path, format: nil, expected: 4, present: available)
        }
        let magic = storage.loadUnaligned(fromByteOffset: head, as: UInt32.self)
        switch magic {
        case 0xA1B2_C3D4: try readPcapHeader(resolution: .microseconds, byteSwapped: false)
        case 0xD4C3_B2A1: try readPcapHeader(resolution: .microseconds, byteSwapped: true)
        case 0xA1B2_3C4D: try readPcapHeader(resolution: .nanoseconds, byteSwapped: false)
        case 0x4D3C_B2A1: try readPcapHeader(resolution: .nanoseconds, byteSwapped: true)
        case PcapngBlockType.sectionHeader:
            format = .pcapng
            try readSectionHeaderBlock()
        default:
            throw .unknownMagic(path: path, magic: UInt32(bigEndian: magic))
        }
    }

    // MARK: - Buffer

    /// Makes `count` bytes available at `head` unless the file ends first; returns how many are available.
    @inline(__always)
    func fill(_ count: Int) throws(CaptureError) -> Int {
        let available = tail - head
        if available >= count { return available }
        return try fillFromFile(count)
    }

    private func fillFromFile(_ count: Int) throws(CaptureError) -> Int {
        if capacity - head < count {
            if head > 0 {
                (storage).copyMemory(from: storage + head, byteCount: tail - head)
                tail -= head
                head = 0
            }
            if capacity < count {
                // Grow to what this record needs, not by doubling, so the buffer tracks the largest record.
                let newCapacity = (count + 4095) & ~4095
                let newStorage = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
                newStorage.copyMemory(from: storage, byteCount: tail)
                storage.deallocate()
                storage = newStorage
                capacity = newCapacity
            }
        }
        while tail - head < count && !reachedEndOfFile {
            let received: Int
            do {
                received = try SystemCall.readSome(fileDescriptor, into: storage + tail, count: capacity - tail)
            } catch {
                throw .readFailed(path: path, offset: headFileOffset + (tail - head), errno: error.errno)
            }
            if received == 0 {
                reachedEndOfFile = true
            } else {
                tail += received
            }
        }
        return tail - head
    }

    @inline(__always)
    func consume(_ count: Int) {
        head += count
        headFileOffset += count
    }

    /// Drops `count` bytes without keeping them, so a huge block we do not parse costs no memory; returns how many
    /// were dropped (fewer only at end of file).
    func discard(_ count: Int) throws(CaptureError) -> Int {
        var remaining = count
        while remaining > 0 {
            var available = tail - head
            if available == 0 {
                available = try fill(min(remaining, capacity))
                if available == 0 { break }
            }
            let step = min(remaining, available)
            consume(step)
            remaining -= step
        }
        return count - remaining
    }

    // MARK: - Integers in the file's byte order

    @inline(__always)
    func loadUInt16(at offset: Int) -> UInt16 {
        let raw = storage.loadUnaligned(fromByteOffset: head + offset, as: UInt16.self)
        return byteSwapped ? raw.byteSwapped : raw
    }

    @inline(__always)
    func loadUInt32(at offset: Int) -> UInt32 {
        let raw = storage.loadUnaligned(fromByteOffset: head + offset, as: UInt32.self)
        return byteSwapped ? raw.byteSwapped : raw
    }

    @inline(__always)
    func loadUInt64(at offset: Int) -> UInt64 {
        let raw = storage.loadUnaligned(fromByteOffset: head + offset, as: UInt64.self)
        return byteSwapped ? raw.byteSwapped : raw
    }

    @inline(__always)
    func bytes(at offset: Int, count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage + head + offset, count: count)
    }
}
