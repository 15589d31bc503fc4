import CColoLinux
import ColoPacket

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A TAP (Ethernet frames) or TUN (raw IP packets) interface whose other end is this process: every frame the kernel
/// sends out of the interface is read here, every frame written here is received by the kernel on it. That is how a
/// VM's NIC looks from QEMU's side, so a namespace behind a TAP port stands in for a VM (LAB.md).
///
/// The descriptor is non-blocking: `read` returns nil and `write` returns false instead of waiting, and callers poll
/// ``fileDescriptor``. The interface exists for as long as the descriptor is open (unless it was made persistent), so
/// ``close()`` (or deinit) removes an interface this process created. Not thread-safe: one owner drives it.
public final class TapDevice {
    /// What the device carries: the flag given to TUNSETIFF.
    public enum Mode: Sendable, Equatable {
        /// Ethernet frames (IFF_TAP).
        case tap
        /// Raw IPv4/IPv6 packets (IFF_TUN), the version in the first nibble.
        case tun

        /// How the bytes after the virtio-net header (if any) are to be parsed.
        @inlinable public var linkType: LinkType { self == .tap ? .ethernet : .rawIP }
    }

    /// What went through the device since it was opened. Frames that would have blocked are counted apart, never
    /// silently dropped: the caller decides (retry, or drop and count).
    public struct Counters: Sendable, Equatable {
        public var framesIn: UInt64 = 0
        public var framesOut: UInt64 = 0
        /// Frame bytes, without virtio-net headers.
        public var bytesIn: UInt64 = 0
        /// Frame bytes, without virtio-net headers.
        public var bytesOut: UInt64 = 0
        /// Writes refused with EAGAIN (the frame was not sent).
        public var writeWouldBlock: UInt64 = 0
        /// Reads and writes that failed with another errno.
        public var errors: UInt64 = 0

        public init() {}
    }

    /// The interface name the kernel used (it fills in the number of a "colo%d" pattern).
    public let name: String
    public let mode: Mode
    /// The non-blocking descriptor to poll, or -1 once closed.
    public private(set) var fileDescriptor: Int32
    /// Bytes of virtio-net header before every frame read or written: 0 without vnet_hdr, else what the kernel
    /// reports (10 is `struct virtio_net_hdr`, 12 adds `num_buffers` as QEMU and virtio 1.0 use).
    public let vnetHeaderLength: Int
    public private(set) var counters = Counters()

    /// Opens /dev/net/tun and attaches to (creating if absent) the interface `name`, with IFF_NO_PI so that reads
    /// and writes are bare frames.
    ///
    /// - Parameters:
    ///   - name: at most 15 bytes; may contain one `%d` for the kernel to number.
    ///   - vnetHeader: IFF_VNET_HDR: every frame is preceded by a virtio-net header. Offloads stay off (TUNSETOFFLOAD
    ///     0), so the kernel still hands over whole, checksummed frames and writers may send a zeroed header.
    ///   - vnetHeaderLength: TUNSETVNETHDRSZ; nil keeps the kernel's default.
    ///   - offload: with `vnetHeader`, lets the kernel hand over partial checksums and TCP segments of up to 64 KiB
    ///     (TUNSETOFFLOAD CSUM|TSO4|TSO6|TSO_ECN), described by each frame's virtio-net header: the interface then
    ///     advertises TSO to its stack, as a virtio NIC does. The reader must keep the header with the frame and
    ///     give it back when sending (``readFrame(header:into:spill:)``, ``writeFrame(header:_:)``).
    public init(
        name: String, mode: Mode = .tap, vnetHeader: Bool = false, vnetHeaderLength: Int? = nil,
        offload: Bool = false
    ) throws(PortError) {
        let opened = CColoLinux_tunOpen()
        if opened < 0 {
            throw PortError(operation: "open", device: "/dev/net/tun", code: -opened, hint: Self.openHint(-opened))
        }
        // Until the descriptor belongs to `self`, every failure closes it here.
        func fail(_ operation: String, _ device: String, _ code: Int32, _ hint: String? = nil) -> PortError {
            _ = Glibc.close(opened)
            return PortError(operation: operation, device: device, code: code, hint: hint ?? Self.commonHint(code))
        }

        var flags = CColoLinux_tunFlagNoPacketInfo | (mode == .tap ? CColoLinux_tunFlagTap : CColoLinux_tunFlagTun)
        if vnetHeader { flags |= CColoLinux_tunFlagVnetHeader }
        var actualName = [CChar](repeating: 0, count: Int(CColoLinux_interfaceNameSize))
        let attached = name.withCString { requested in
            actualName.withUnsafeMutableBufferPointer {
                CColoLinux_tunSetInterface(opened, requested, flags, $0.baseAddress)
            }
        }
        if attached < 0 { throw fail("TUNSETIFF", name, -attached, Self.setInterfaceHint(-attached, mode: mode)) }
        let kernelName = String(decoding: actualName.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)

        var headerLength = 0
        if vnetHeader {
            if let requested = vnetHeaderLength {
                let set = CColoLinux_tunSetVnetHeaderSize(opened, Int32(clamping: requested))
                if set < 0 {
                    throw fail("TUNSETVNETHDRSZ \(requested)", kernelName, -set, "the kernel accepts 10 or more")
                }
            }
            let current = CColoLinux_tunGetVnetHeaderSize(opened)
            if current < 0 { throw fail("TUNGETVNETHDRSZ", kernelName, -current) }
            headerLength = Int(current)
        }
        // No offloads unless asked: without them the stack checksums and segments in software, so every frame read
        // is complete and comparable byte for byte, and nothing depends on the reader honouring the header's GSO
        // fields. Offloads need the header to describe the frames.
        let offloads =
            offload && vnetHeader ? CColoLinux_tunOffloadChecksum | CColoLinux_tunOffloadTCPSegmentation : 0
        let offloadSet = CColoLinux_tunSetOffload(opened, offloads)
        if offloadSet < 0 { throw fail("TUNSETOFFLOAD \(offloads)", kernelName, -offloadSet) }

        self.name = kernelName
        self.mode = mode
        self.fileDescriptor = opened
        self.vnetHeaderLength = headerLength
        self.offloads = offloads != 0
    }

    /// Whether the kernel may hand over partial checksums and 64 KiB TCP segments (see `init`'s `offload`).
    public let offloads: Bool

    deinit { close() }

    /// Reads one frame into `buffer`: its length (including the ``vnetHeaderLength`` header bytes in front), or nil
    /// when none is waiting. A frame longer than `buffer` is silently cut to `buffer.count` by the kernel, so give
    /// more than MTU + 18 + ``vnetHeaderLength`` bytes; then a read that fills the buffer means a truncated frame.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(PortError) -> Int? {
        do throws(TapSystemCall.Errno) {
            guard let count = try TapSystemCall.readOnce(fileDescriptor, into: buffer) else { return nil }
            counters.framesIn &+= 1
            counters.bytesIn &+= UInt64(max(0, count - vnetHeaderLength))
            return count
        } catch {
            counters.errors &+= 1
            throw failure("read", error.code, hint: transferHint(error.code, writing: false))
        }
    }

    /// Writes one frame (preceded by its ``vnetHeaderLength``-byte virtio-net header when vnet_hdr is on; all zeros
    /// means "no offload, checksums complete"). Returns false when the kernel would block: the frame was not sent and
    /// ``Counters/writeWouldBlock`` counts it. (Linux hands written frames to the stack at once: a burst of 20,000
    /// never returned EAGAIN here; frames the stack refuses show up in the interface's RX dropped, not as errors.)
    ///
    /// Throws EIO while the interface is down, EINVAL for a frame shorter than its headers.
    public func write(_ frame: UnsafeRawBufferPointer) throws(PortError) -> Bool {
        do throws(TapSystemCall.Errno) {
            guard try TapSystemCall.writeOnce(fileDescriptor, frame) != nil else {
                counters.writeWouldBlock &+= 1
                return false
            }
            counters.framesOut &+= 1
            counters.bytesOut &+= UInt64(max(0, frame.count - vnetHeaderLength))
            return true
        } catch {
            counters.errors &+= 1
            throw failure("write", error.code, hint: transferHint(error.code, writing: true))
        }
    }

    /// Reads one frame with its virtio-net header split off: the header's ``vnetHeaderLength`` bytes go to `header`,
    /// the frame to `buffer` and, past its end, to `spill` (for 64 KiB segments with offloads on, or jumbo frames).
    /// Returns the frame's length without the header (nil when none is waiting); the first `buffer.count` bytes are
    /// in `buffer`, the rest at the start of `spill`. A frame longer than both is cut to their sum.
    public func readFrame(
        header: UnsafeMutableRawPointer, into buffer: UnsafeMutableRawBufferPointer,
        spill: UnsafeMutableRawBufferPointer
    ) throws(PortError) -> Int? {
        let headerLength = vnetHeaderLength
        return try withUnsafeTemporaryAllocation(of: iovec.self, capacity: 3) { vectors throws(PortError) -> Int? in
            var n = 0
            if headerLength > 0 {
                vectors[n] = iovec(iov_base: header, iov_len: headerLength)
                n += 1
            }
            vectors[n] = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
            vectors[n + 1] = iovec(iov_base: spill.baseAddress, iov_len: spill.count)
            let read: Int?
            guard let base = vectors.baseAddress else { return nil }  // a 3-element allocation: never nil
            do throws(TapSystemCall.Errno) {
                read = try TapSystemCall.readVector(fileDescriptor, base, count: Int32(n + 2))
            } catch {
                counters.errors &+= 1
                throw failure("read", error.code, hint: transferHint(error.code, writing: false))
            }
            guard let count = read else { return nil }
            guard count >= headerLength else {
                counters.errors &+= 1
                throw failure("read", EPROTO, hint: "frame shorter than its \(headerLength)-byte virtio-net header")
            }
            counters.framesIn &+= 1
            counters.bytesIn &+= UInt64(count - headerLength)
            return count - headerLength
        }
    }

    /// Writes `frame` behind a virtio-net header taken from `header` (``vnetHeaderLength`` bytes; ignored when the
    /// device has none). Returns false when the kernel would block, as ``write(_:)``.
    public func writeFrame(header: UnsafeRawPointer, _ frame: UnsafeRawBufferPointer) throws(PortError) -> Bool {
        let headerLength = vnetHeaderLength
        return try withUnsafeTemporaryAllocation(of: iovec.self, capacity: 2) { vectors throws(PortError) -> Bool in
            var n = 0
            if headerLength > 0 {
                vectors[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: header), iov_len: headerLength)
                n += 1
            }
            vectors[n] = iovec(iov_base: UnsafeMutableRawPointer(mutating: frame.baseAddress), iov_len: frame.count)
            guard let base = vectors.baseAddress else { return false }  // a 2-element allocation: never nil
            do throws(TapSystemCall.Errno) {
                guard try TapSystemCall.writeVector(fileDescriptor, base, count: Int32(n + 1)) != nil
                else {
                    counters.writeWouldBlock &+= 1
                    return false
                }
                counters.framesOut &+= 1
                counters.bytesOut &+= UInt64(frame.count)
                return true
            } catch {
                counters.errors &+= 1
                throw failure("write", error.code, hint: transferHint(error.code, writing: true))
            }
        }
    }

    /// Reads frames into `batch`'s slots until it is full or none is waiting; returns how many (also
    /// `batch.count`). An error on the first read is thrown; one after some frames ends the batch early (and is
    /// counted): those frames are delivered and the next call meets the error again if it persists.
    public func readBatch(into batch: TapFrameBatch) throws(PortError) -> Int {
        batch.reset(vnetHeaderLength: vnetHeaderLength)
        while batch.count < batch.capacity {
            let length: Int?
            do {
                length = try read(into: batch.slot(batch.count))
            } catch {
                if batch.count == 0 { throw error }
                break
            }
            guard let length else { break }
            batch.append(length: length)
        }
        return batch.count
    }

    /// TUNSETPERSIST: whether the interface survives this descriptor. A device this process creates is not
    /// persistent, so it disappears with ``close()``; one made by `ip tuntap add` is left as the administrator set it.
    public func setPersistent(_ persistent: Bool) throws(PortError) {
        let result = CColoLinux_tunSetPersist(fileDescriptor, persistent ? 1 : 0)
        if result < 0 { throw failure("TUNSETPERSIST \(persistent ? 1 : 0)", -result) }
    }

    /// Whether the interface is marked persistent (TUNGETIFF).
    public func isPersistent() throws(PortError) -> Bool {
        let flags = CColoLinux_tunGetFlags(fileDescriptor)
        if flags < 0 { throw failure("TUNGETIFF", -flags) }
        return flags & CColoLinux_tunFlagPersist != 0
    }

    /// Closes the descriptor (once; later calls do nothing). A non-persistent interface goes away with it.
    public func close() {
        guard fileDescriptor >= 0 else { return }
        // Not retried on EINTR: Linux releases the descriptor even then, and a retry could close a reused number.
        _ = Glibc.close(fileDescriptor)
        fileDescriptor = -1
    }

    // MARK: Errors

    func failure(_ operation: String, _ code: Int32, hint: String? = nil) -> PortError {
        PortError(operation: operation, device: name, code: code, hint: hint ?? Self.commonHint(code))
    }

    func transferHint(_ code: Int32, writing: Bool) -> String? {
        switch code {
        // The kernel refuses frames for an interface that is not up rather than queueing them.
        case EIO where writing: "the interface is down"
        case EINVAL where writing:
            vnetHeaderLength > 0
                ? "shorter than the \(vnetHeaderLength)-byte virtio-net header plus a link header, or a bad header"
                : "shorter than a \(mode == .tap ? "14-byte Ethernet" : "20-byte IP") header"
        // The interface was deleted under the descriptor (e.g. its namespace was removed).
        case EBADFD: "the interface is gone"
        default: Self.commonHint(code)
        }
    }

    static func openHint(_ code: Int32) -> String? {
        switch code {
        case ENOENT, ENODEV, ENXIO: "is the tun module loaded? modprobe tun"
        case EACCES, EPERM: "/dev/net/tun is usually root-only: run as root"
        default: commonHint(code)
        }
    }

    static func setInterfaceHint(_ code: Int32, mode: Mode) -> String? {
        switch code {
        case EPERM, EACCES: "needs CAP_NET_ADMIN: run as root"
        case EBUSY: "another descriptor already holds this interface"
        case EINVAL:
            "an interface of that name exists and is not a \(mode == .tap ? "TAP" : "TUN") device with these flags"
        case ENAMETOOLONG: "interface names have at most \(CColoLinux_interfaceNameSize - 1) bytes"
        default: commonHint(code)
        }
    }

    static func commonHint(_ code: Int32) -> String? {
        switch code {
        case EBADF: "the device is closed"
        case EBADFD: "the descriptor is not attached to an interface"
        case EMFILE, ENFILE: "too many open files"
        default: nil
        }
    }
}
