public import ColoPacket

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Writes a classic pcap file (host byte order, as libpcap does) that tcpdump, tshark and `CaptureReader` read.
///
/// Records are buffered: call `close()` to see write errors; `deinit` flushes too, but can only drop its errors.
/// Packets longer than `snapshotLength` are cut to it, as a live capture would, keeping their original length.
public final class PcapWriter {
    /// The snapshot length tcpdump and tshark use by default, so our files look like theirs.
    public static let defaultSnapshotLength: UInt32 = 262_144
    static let bufferCapacity = 65_536

    public let path: String
    public let resolution: PcapTimestampResolution
    public let linkType: LinkType
    public let snapshotLength: UInt32

    private var fileDescriptor: Int32
    private let buffer: UnsafeMutableRawPointer
    private var buffered = 0

    /// Creates or truncates `path` and writes the global header.
    public init(
        path: String, linkType: LinkType, resolution: PcapTimestampResolution = .microseconds,
        snapshotLength: UInt32 = PcapWriter.defaultSnapshotLength
    ) throws(CaptureError) {
        do {
            fileDescriptor = try SystemCall.openFile(path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        } catch {
            throw .cannotOpen(path: path, errno: error.errno)
        }
        self.path = path
        self.linkType = linkType
        self.resolution = resolution
        self.snapshotLength = max(snapshotLength, 1)
        buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.bufferCapacity, alignment: 16)
        let magic: UInt32 = resolution == .microseconds ? 0xA1B2_C3D4 : 0xA1B2_3C4D
        buffer.storeBytes(of: magic, toByteOffset: 0, as: UInt32.self)
        buffer.storeBytes(of: 2, toByteOffset: 4, as: UInt16.self)
        buffer.storeBytes(of: 4, toByteOffset: 6, as: UInt16.self)
        buffer.storeBytes(of: 0, toByteOffset: 8, as: Int32.self)
        buffer.storeBytes(of: 0, toByteOffset: 12, as: UInt32.self)
        buffer.storeBytes(of: self.snapshotLength, toByteOffset: 16, as: UInt32.self)
        buffer.storeBytes(of: linkType.rawValue, toByteOffset: 20, as: UInt32.self)
        buffered = 24
    }

    deinit {
        if fileDescriptor >= 0 {
            try? flush()
            try? SystemCall.closeFile(fileDescriptor)
        }
        buffer.deallocate()
    }

    /// Appends one record. `originalLength` defaults to the byte count and is never taken below it.
    public func write(
        bytes: UnsafeRawBufferPointer, timestampNanoseconds: UInt64, originalLength: Int? = nil
    ) throws(CaptureError) {
        guard fileDescriptor >= 0 else { throw .writerClosed(path: path) }
        let seconds = timestampNanoseconds / 1_000_000_000
        guard seconds <= UInt64(UInt32.max) else {
            throw .timestampNotRepresentable(path: path, nanoseconds: timestampNanoseconds)
        }
        let nanosecondsInSecond = timestampNanoseconds % 1_000_000_000
        let fraction = resolution == .microseconds ? nanosecondsInSecond / 1_000 : nanosecondsInSecond
        let capturedLength = min(bytes.count, Int(snapshotLength))
        let original = min(max(originalLength ?? bytes.count, capturedLength), Int(UInt32.max))

        if Self.bufferCapacity - buffered < 16 + capturedLength { try flush() }
        let header = buffer + buffered
        header.storeBytes(of: UInt32(seconds), toByteOffset: 0, as: UInt32.self)
        header.storeBytes(of: UInt32(fraction), toByteOffset: 4, as: UInt32.self)
        header.storeBytes(of: UInt32(capturedLength), toByteOffset: 8, as: UInt32.self)
        header.storeBytes(of: UInt32(original), toByteOffset: 12, as: UInt32.self)
        buffered += 16
        guard capturedLength > 0, let source = bytes.baseAddress else { return }
        if capturedLength <= Self.bufferCapacity - buffered {
            (buffer + buffered).copyMemory(from: source, byteCount: capturedLength)
            buffered += capturedLength
        } else {
            // Larger than the buffer: copying it through would only add a memcpy.
            try flush()
            try writeToFile(source, count: capturedLength)
        }
    }

    /// Appends one record from an array (convenience for tests and tools).
    public func write(bytes: [UInt8], timestampNanoseconds: UInt64, originalLength: Int? = nil) throws(CaptureError) {
        // withUnsafeBytes rethrows untyped, so the typed error is carried out through a Result.
        let result: Result<Void, CaptureError> = bytes.withUnsafeBytes { raw in
            Result { () throws(CaptureError) in
                try write(bytes: raw, timestampNanoseconds: timestampNanoseconds, originalLength: originalLength)
            }
        }
        try result.get()
    }

    /// Hands buffered records to the kernel, e.g. so another process can read the file while we keep writing.
    public func flush() throws(CaptureError) {
        guard fileDescriptor >= 0 else { throw .writerClosed(path: path) }
        if buffered == 0 { return }
        let count = buffered
        buffered = 0
        try writeToFile(buffer, count: count)
    }

    /// Flushes and closes; later writes throw `writerClosed`. Closing twice is harmless.
    public func close() throws(CaptureError) {
        guard fileDescriptor >= 0 else { return }
        defer { fileDescriptor = -1 }
        let flushError: CaptureError?
        do {
            try flush()
            flushError = nil
        } catch {
            flushError = error
        }
        do {
            try SystemCall.closeFile(fileDescriptor)
        } catch {
            throw flushError ?? .closeFailed(path: path, errno: error.errno)
        }
        if let flushError { throw flushError }
    }

    private func writeToFile(_ source: UnsafeRawPointer, count: Int) throws(CaptureError) {
        do {
            try SystemCall.writeAll(fileDescriptor, from: source, count: count)
        } catch {
            throw .writeFailed(path: path, errno: error.errno)
        }
    }
}
