/// A message on the notify_dev channel between the proxy and a Xen-style checkpoint controller (WIRE.md §1):
/// a 4-byte big-endian length, then ASCII text without a NUL terminator.
public enum NotifyMessage: Sendable, Equatable, CaseIterable {
    /// `DO_CHECKPOINT`, proxy → controller: the replicas diverged.
    case doCheckpoint
    /// `COLO_CHECKPOINT`, controller → proxy: a checkpoint completed (flush queues, reset rewriter offsets).
    case checkpointDone
    /// `COLO_USERSPACE_PROXY_INIT`, controller → proxy: the controller asks whether the proxy is there.
    case proxyInit
    /// `COLO_COMPARE_GET_XEN_INIT`, proxy → controller: the answer to `.proxyInit`.
    case proxyInitReply

    /// The longest message the notify decoder accepts by default; the known ones are under 32 bytes.
    public static let defaultMaxLength = 4096

    /// The text on the wire.
    public var text: String { staticText.description }

    /// A `StaticString` so that matching and encoding read constant bytes instead of building strings.
    var staticText: StaticString {
        switch self {
        case .doCheckpoint: return "DO_CHECKPOINT"
        case .checkpointDone: return "COLO_CHECKPOINT"
        case .proxyInit: return "COLO_USERSPACE_PROXY_INIT"
        case .proxyInitReply: return "COLO_COMPARE_GET_XEN_INIT"
        }
    }

    /// The message whose text is exactly `payload`, if any.
    public init?(payload: UnsafeRawBufferPointer) {
        for message in Self.allCases {
            let text = message.staticText
            let known = UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount)
            if payload.elementsEqual(known) {
                self = message
                return
            }
        }
        return nil
    }

    /// The bytes the message takes on the wire, prefix included.
    public var encodedLength: Int { 4 + staticText.utf8CodeUnitCount }

    /// Writes the message at the start of `output` and returns the bytes written.
    public func encode(into output: UnsafeMutableRawBufferPointer) throws(ChardevError) -> Int {
        guard output.count >= encodedLength else {
            throw .outputTooSmall(needed: encodedLength, available: output.count)
        }
        write(into: output)
        return encodedLength
    }

    /// Appends the message to `output`.
    public func append(to output: inout [UInt8]) {
        let start = output.count
        output.append(contentsOf: repeatElement(0, count: encodedLength))
        output.withUnsafeMutableBytes { raw in write(into: UnsafeMutableRawBufferPointer(rebasing: raw[start...])) }
    }

    private func write(into output: UnsafeMutableRawBufferPointer) {
        let text = staticText
        output.storeBytes(of: UInt32(text.utf8CodeUnitCount).bigEndian, toByteOffset: 0, as: UInt32.self)
        UnsafeMutableRawBufferPointer(rebasing: output[4..<(4 + text.utf8CodeUnitCount)])
            .copyMemory(from: UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }
}

/// Reads notify_dev messages out of a byte stream split at any byte, like `ChardevFrameDecoder`.
///
/// Every error poisons the decoder, an unknown message included: a controller speaking another dialect is a
/// configuration fault, and closing the connection (SPEC §8) makes it visible instead of ignoring checkpoints.
public struct NotifyMessageDecoder: Sendable {
    private var reader: ChardevStreamReader

    /// `maxMessageLength` bounds what one message may claim, and so the reassembly buffer.
    public init(maxMessageLength: Int = NotifyMessage.defaultMaxLength) {
        reader = ChardevStreamReader(
            channel: .notify, prefixLength: 4, maxLength: maxMessageLength, maxVnetHeaderLength: 0,
            minimumPayloadLength: 1)
    }

    /// Decodes `bytes`, calling `onMessage` for every message completed by them, in order.
    public mutating func feed(
        _ bytes: UnsafeRawBufferPointer, _ onMessage: (NotifyMessage) throws(ChardevError) -> Void
    ) throws(ChardevError) {
        try reader.feed(bytes) { (payload, _, streamOffset) throws(ChardevError) in
            if let nul = payload.firstIndex(of: 0) {
                throw .nulInNotifyMessage(position: nul, length: payload.count, streamOffset: streamOffset)
            }
            guard let message = NotifyMessage(payload: payload) else {
                throw .unknownNotifyMessage(
                    text: Self.printable(payload), length: payload.count, streamOffset: streamOffset)
            }
            try onMessage(message)
        }
    }

    /// Bytes of an incomplete message held back.
    public var pendingBytes: Int { reader.buffered }

    /// The error that poisoned the decoder, if any.
    public var failure: ChardevError? { reader.failure }

    /// Call at EOF: throws `.truncatedStream` when the stream ended inside a message (nothing when poisoned).
    public func finish() throws(ChardevError) {
        try reader.finish()
    }

    /// Starts a new stream (after a reconnect).
    public mutating func reset() {
        reader.reset()
    }

    /// The first 64 bytes, non-printable ones as `\xNN`, so that a log line stays one short line.
    static func printable(_ payload: UnsafeRawBufferPointer) -> String {
        let shown = 64
        var text = ""
        for byte in payload.prefix(shown) {
            if byte >= 0x20 && byte < 0x7f && byte != UInt8(ascii: "\\") && byte != UInt8(ascii: "\"") {
                text.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = String(byte, radix: 16, uppercase: false)
                text += "\\x" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return payload.count > shown ? text + "..." : text
    }
}
