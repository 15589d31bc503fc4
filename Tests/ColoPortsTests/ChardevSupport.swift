import Testing

@testable import ColoPorts

/// SplitMix64: reproducible randomness, so a failing stream can be rebuilt from its seed.
struct ChardevSeededRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}

/// A decoded frame copied out of the decoder's views, for comparison.
struct ChardevTestFrame: Equatable, CustomStringConvertible {
    var vnetHeader: [UInt8]
    var ethernet: [UInt8]

    var description: String { "frame(vnet \(vnetHeader.count), ethernet \(ethernet.count))" }

    /// Bytes that differ from frame to frame so that a misplaced boundary shows.
    static func pattern(vnetHeaderLength: Int, ethernetLength: Int, seed: Int) -> ChardevTestFrame {
        ChardevTestFrame(
            vnetHeader: (0..<vnetHeaderLength).map { UInt8(truncatingIfNeeded: 0xA0 &+ $0 &+ seed) },
            ethernet: (0..<ethernetLength).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed &* 13) })
    }
}

func chardevBigEndian(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
}

/// The wire bytes of `frames`, built by hand from WIRE.md §1 rather than by the encoder under test.
func chardevWire(_ frames: [ChardevTestFrame], vnetHeaderSupport: Bool) -> [UInt8] {
    var bytes: [UInt8] = []
    for frame in frames {
        bytes += chardevBigEndian(UInt32(frame.vnetHeader.count + frame.ethernet.count))
        if vnetHeaderSupport { bytes += chardevBigEndian(UInt32(frame.vnetHeader.count)) }
        bytes += frame.vnetHeader + frame.ethernet
    }
    return bytes
}

/// Feeds `stream` to `decoder` as the chunks that end at `cuts` (sorted, within the stream) and the rest, and
/// returns the frames decoded, copied.
func chardevDecode(
    _ stream: [UInt8], with decoder: inout ChardevFrameDecoder, cuts: [Int] = []
) throws -> [ChardevTestFrame] {
    var frames: [ChardevTestFrame] = []
    try stream.withUnsafeBytes { all in
        var start = 0
        for end in cuts + [all.count] {
            try decoder.feed(UnsafeRawBufferPointer(rebasing: all[start..<end])) { frame in
                frames.append(ChardevTestFrame(vnetHeader: Array(frame.vnetHeader), ethernet: Array(frame.ethernet)))
            }
            start = end
        }
    }
    return frames
}

/// Like `chardevDecode`, with a fresh decoder that must end the stream between frames.
func chardevDecode(_ stream: [UInt8], framing: ChardevFraming, cuts: [Int] = []) throws -> [ChardevTestFrame] {
    var decoder = ChardevFrameDecoder(framing: framing)
    let frames = try chardevDecode(stream, with: &decoder, cuts: cuts)
    try decoder.finish()
    return frames
}

/// The error the decoder throws for `stream`, fed all at once; nil when it throws none.
func chardevDecodeError(_ stream: [UInt8], framing: ChardevFraming) -> ChardevError? {
    var decoder = ChardevFrameDecoder(framing: framing)
    do {
        _ = try chardevDecode(stream, with: &decoder)
        try decoder.finish()
        return nil
    } catch {
        return error as? ChardevError
    }
}

/// Feeds `stream` to a notify decoder in the chunks that end at `cuts`, returning the messages.
func chardevDecodeNotify(
    _ stream: [UInt8], with decoder: inout NotifyMessageDecoder, cuts: [Int] = []
) throws -> [NotifyMessage] {
    var messages: [NotifyMessage] = []
    try stream.withUnsafeBytes { all in
        var start = 0
        for end in cuts + [all.count] {
            try decoder.feed(UnsafeRawBufferPointer(rebasing: all[start..<end])) { messages.append($0) }
            start = end
        }
    }
    return messages
}
