/// Why a chardev stream (packet frames or notify messages) could not be read or written; `description` is one line
/// naming the field, its value and, when reading, the stream byte where the bad record starts.
///
/// A reader that throws one of these is poisoned: nothing after a bad length can be trusted to start a record, so
/// the caller closes the connection (SPEC §8) and later calls throw `.poisoned`.
public enum ChardevError: Error, CustomStringConvertible, Equatable, Sendable {
    /// L = 0, which no sender emits.
    case zeroLength(channel: ChardevChannel, streamOffset: UInt64)
    /// L above the configured limit. `streamOffset` is nil when writing.
    case lengthTooLarge(channel: ChardevChannel, length: Int, limit: Int, streamOffset: UInt64?)
    /// V above the configured limit.
    case vnetHeaderTooLong(length: Int, limit: Int, streamOffset: UInt64?)
    /// V larger than L, which includes it.
    case vnetHeaderExceedsFrame(vnetHeaderLength: Int, frameLength: Int, streamOffset: UInt64?)
    /// Fewer than 14 bytes of Ethernet after the vnet header.
    case frameShorterThanEthernetHeader(frameLength: Int, vnetHeaderLength: Int, streamOffset: UInt64?)
    /// A frame with vnet header bytes for a connection without the V field, which cannot carry them.
    case vnetHeaderWithoutSupport(length: Int)
    /// The stream ended inside a record. `expected` is the whole record with its prefix, nil when the prefix itself
    /// was cut short.
    case truncatedStream(channel: ChardevChannel, present: Int, expected: Int?, streamOffset: UInt64)
    /// A NUL byte in a notify message; `position` counts from the first payload byte.
    case nulInNotifyMessage(position: Int, length: Int, streamOffset: UInt64)
    /// A well-framed notify message that is none of the four known texts. `text` is escaped and shortened.
    case unknownNotifyMessage(text: String, length: Int, streamOffset: UInt64)
    /// The caller's output buffer cannot hold the encoded record.
    case outputTooSmall(needed: Int, available: Int)
    /// Input offered to a reader after it threw `after`.
    indirect case poisoned(after: ChardevError)

    public var description: String {
        switch self {
        case .zeroLength(let channel, let offset):
            return "zero-length \(channel.recordName)\(Self.at(offset))"
        case .lengthTooLarge(let channel, let length, let limit, let offset):
            return "\(channel.recordName) length \(length) exceeds the \(limit)-byte limit\(Self.at(offset))"
        case .vnetHeaderTooLong(let length, let limit, let offset):
            return "vnet header length \(length) exceeds \(limit)\(Self.at(offset))"
        case .vnetHeaderExceedsFrame(let vnetLength, let frameLength, let offset):
            return "vnet header length \(vnetLength) exceeds the frame length \(frameLength)\(Self.at(offset))"
        case .frameShorterThanEthernetHeader(let frameLength, let vnetLength, let offset):
            let minimum = ChardevFraming.ethernetHeaderLength
            if vnetLength == 0 {
                return "frame of \(frameLength) bytes is shorter than an Ethernet header (\(minimum))\(Self.at(offset))"
            }
            return "frame of \(frameLength) bytes holds \(frameLength - vnetLength) bytes after its \(vnetLength)-byte "
                + "vnet header, less than an Ethernet header (\(minimum))\(Self.at(offset))"
        case .vnetHeaderWithoutSupport(let length):
            return "frame has a \(length)-byte vnet header but the connection has vnet_hdr_support=off"
        case .truncatedStream(let channel, let present, let expected, let offset):
            let what = expected.map { "\(present) of \($0) bytes" } ?? "\(present) bytes of its length prefix"
            return "stream ended inside a \(channel.recordName): \(what)\(Self.at(offset))"
        case .nulInNotifyMessage(let position, let length, let offset):
            return "NUL byte at position \(position) of a \(length)-byte notify message\(Self.at(offset))"
        case .unknownNotifyMessage(let text, let length, let offset):
            return "unknown notify message \"\(text)\" (\(length) bytes)\(Self.at(offset))"
        case .outputTooSmall(let needed, let available):
            return "output buffer of \(available) bytes cannot hold the \(needed)-byte encoded record"
        case .poisoned(let first):
            return "input refused after an earlier framing error: \(first)"
        }
    }

    private static func at(_ offset: UInt64?) -> String {
        offset.map { " at stream byte \($0)" } ?? ""
    }
}
