/// How one QEMU chardev socket frames packets (WIRE.md §1): a big-endian u32 length L, then a u32 vnet header
/// length V only when `vnetHeaderSupport` is on, then L bytes (V bytes of virtio-net header, then Ethernet).
///
/// Nothing on the wire says whether V is present, so both ends must be configured alike, out of band.
public struct ChardevFraming: Sendable, Equatable {
    /// QEMU's receive buffer (4096 + 65536 bytes); QEMU stops reading a chardev that sends a larger frame.
    public static let defaultMaxFrameLength = 69_632
    /// The largest virtio-net header QEMU knows (`virtio_net_hdr_v1_hash`: 12 bytes plus an 8-byte hash report).
    public static let defaultMaxVnetHeaderLength = 20
    /// Destination, source and EtherType: what every frame must hold after its vnet header.
    public static let ethernetHeaderLength = 14

    /// The V field follows L in every frame (QEMU's `vnet_hdr_support=on`).
    public var vnetHeaderSupport: Bool
    /// The largest L accepted or sent; L counts the vnet header bytes too.
    public var maxFrameLength: Int
    /// The largest V accepted or sent.
    public var maxVnetHeaderLength: Int

    public init(
        vnetHeaderSupport: Bool = false,
        maxFrameLength: Int = ChardevFraming.defaultMaxFrameLength,
        maxVnetHeaderLength: Int = ChardevFraming.defaultMaxVnetHeaderLength
    ) {
        self.vnetHeaderSupport = vnetHeaderSupport
        self.maxFrameLength = maxFrameLength
        self.maxVnetHeaderLength = maxVnetHeaderLength
    }

    /// Bytes before the vnet header: L, and V when present.
    @inlinable public var prefixLength: Int { vnetHeaderSupport ? 8 : 4 }
}

/// One frame read from a chardev stream.
///
/// A view, not a copy: the bytes live in the caller's input or in the decoder's reassembly buffer and are valid only
/// inside the callback that receives the frame. Copy them to keep them longer.
public struct ChardevFrame {
    /// The V bytes of virtio-net header; empty when the connection has no V field or the sender had none (V = 0).
    public let vnetHeader: UnsafeRawBufferPointer
    /// The Ethernet frame, at least 14 bytes.
    public let ethernet: UnsafeRawBufferPointer
    /// Where the frame's length prefix starts in the stream, for logs.
    public let streamOffset: UInt64

    public init(vnetHeader: UnsafeRawBufferPointer, ethernet: UnsafeRawBufferPointer, streamOffset: UInt64 = 0) {
        self.vnetHeader = vnetHeader
        self.ethernet = ethernet
        self.streamOffset = streamOffset
    }

    /// V as it was on the wire (0 when the connection has no V field).
    public var vnetHeaderLength: Int { vnetHeader.count }
    /// L: the vnet header and the Ethernet frame together.
    public var length: Int { vnetHeader.count + ethernet.count }
}

/// Which kind of stream an error comes from, so that messages say "frame" or "notify message".
public enum ChardevChannel: Sendable, Equatable {
    /// filter-mirror / filter-redirector / colo-compare packet streams.
    case packets
    /// The checkpoint controller's notify_dev channel.
    case notify

    var recordName: String {
        switch self {
        case .packets: return "frame"
        case .notify: return "notify message"
        }
    }
}
