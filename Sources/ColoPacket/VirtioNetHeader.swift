/// The offload description a virtio-net header (`struct virtio_net_hdr`, 10 bytes, little-endian; 12 with
/// `num_buffers`) puts in front of a frame on a vnet_hdr TAP device or a `vnet_hdr_support` chardev.
///
/// All zero means "a complete frame, checksums done". With offloads on, the kernel hands over TCP segments of up to
/// 64 KiB (`gsoType` TCPv4/TCPv6, to be cut into `gsoSize`-byte segments) whose transport checksum is only the
/// pseudo-header sum (`needsChecksum`): whoever finally sends the frame computes the rest over
/// [`checksumStart`, end) and stores it at `checksumStart + checksumOffset`. Such a frame is forwarded with the same
/// header, and fields inside the checksummed range may be edited without touching the checksum field.
public struct VirtioNetHeader: Equatable, Sendable {
    /// VIRTIO_NET_HDR_F_NEEDS_CSUM (1), VIRTIO_NET_HDR_F_DATA_VALID (2).
    public var flags: UInt8 = 0
    /// VIRTIO_NET_HDR_GSO_NONE (0), TCPV4 (1), UDP (3), TCPV6 (4), UDP_L4 (5); | ECN (0x80).
    public var gsoType: UInt8 = 0
    /// Bytes of headers before the payload (a hint).
    public var headerLength: UInt16 = 0
    /// Payload bytes per segment once cut.
    public var gsoSize: UInt16 = 0
    public var checksumStart: UInt16 = 0
    public var checksumOffset: UInt16 = 0

    /// The bytes the header occupies without `num_buffers`.
    public static let size = 10
    public static let needsChecksumFlag: UInt8 = 1

    @inlinable public init() {}

    /// The transport checksum field holds only the pseudo-header sum.
    @inlinable public var needsChecksum: Bool { flags & Self.needsChecksumFlag != 0 }
    /// Nothing to do: the frame is complete (the usual case with offloads off).
    @inlinable public var isEmpty: Bool { flags == 0 && gsoType == 0 }

    /// Reads the first 10 bytes of `bytes` (which must hold at least that many).
    @inlinable
    public init(loadingFrom bytes: UnsafeRawPointer) {
        flags = bytes.load(fromByteOffset: 0, as: UInt8.self)
        gsoType = bytes.load(fromByteOffset: 1, as: UInt8.self)
        headerLength = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        gsoSize = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        checksumStart = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 6, as: UInt16.self))
        checksumOffset = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
    }

    /// Writes the header into `length` bytes at `bytes` (10, or 12 and more with `num_buffers` and padding zeroed).
    @inlinable
    public func store(into bytes: UnsafeMutableRawPointer, length: Int) {
        if length > Self.size {
            (bytes + Self.size).initializeMemory(as: UInt8.self, repeating: 0, count: length - Self.size)
        }
        guard length >= Self.size else {
            bytes.initializeMemory(as: UInt8.self, repeating: 0, count: length)
            return
        }
        bytes.storeBytes(of: flags, toByteOffset: 0, as: UInt8.self)
        bytes.storeBytes(of: gsoType, toByteOffset: 1, as: UInt8.self)
        bytes.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        bytes.storeBytes(of: gsoSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        bytes.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        bytes.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
    }
}
