/// Reads Ethernet frames out of a QEMU chardev byte stream (WIRE.md §1), one connection per decoder.
///
/// Feed it whatever each read returned: frames may be split at any byte and several may share a read. Frames that
/// arrive whole are handed out in place; a split frame is reassembled in one buffer that grows only to the largest
/// allowed frame, so steady-state decoding allocates nothing. After any error the decoder is poisoned and refuses
/// input (the caller closes the connection and starts over with `reset()` or a new decoder).
public struct ChardevFrameDecoder: Sendable {
    public let framing: ChardevFraming
    private var reader: ChardevStreamReader

    public init(framing: ChardevFraming = ChardevFraming()) {
        self.framing = framing
        reader = ChardevStreamReader(
            channel: .packets, prefixLength: framing.prefixLength, maxLength: framing.maxFrameLength,
            maxVnetHeaderLength: framing.maxVnetHeaderLength,
            minimumPayloadLength: ChardevFraming.ethernetHeaderLength)
    }

    /// Decodes `bytes`, calling `onFrame` for every frame completed by them, in order.
    ///
    /// The frame's buffers are valid only during the call. An error thrown by `onFrame` stops decoding and poisons
    /// the decoder too, since the rest of `bytes` was not consumed.
    public mutating func feed(
        _ bytes: UnsafeRawBufferPointer, _ onFrame: (ChardevFrame) throws(ChardevError) -> Void
    ) throws(ChardevError) {
        try reader.feed(bytes) { (record, vnetHeaderLength, streamOffset) throws(ChardevError) in
            let frame = ChardevFrame(
                vnetHeader: UnsafeRawBufferPointer(rebasing: record[0..<vnetHeaderLength]),
                ethernet: UnsafeRawBufferPointer(rebasing: record[vnetHeaderLength...]),
                streamOffset: streamOffset)
            try onFrame(frame)
        }
    }

    /// Bytes of an incomplete frame held back, waiting for the rest; non-zero at EOF means the peer cut a frame.
    public var pendingBytes: Int { reader.buffered }

    /// Bytes consumed by complete frames so far.
    public var streamOffset: UInt64 { reader.streamOffset }

    /// The error that poisoned the decoder, if any.
    public var failure: ChardevError? { reader.failure }

    /// Call at EOF: throws `.truncatedStream` when the stream ended inside a frame. A poisoned decoder throws nothing
    /// here: its error was reported when it happened.
    public func finish() throws(ChardevError) {
        try reader.finish()
    }

    /// Starts a new stream (after a reconnect), keeping the grown reassembly buffer.
    public mutating func reset() {
        reader.reset()
    }

    /// Bytes reserved for reassembly, for tests of the memory bound.
    var reassemblyCapacity: Int { reader.buffer.count }
}
