import Testing

@testable import ColoPorts

@Suite struct ChardevFramingTests {
    static let plain = ChardevFraming()
    static let withVnet = ChardevFraming(vnetHeaderSupport: true)

    /// Encodes with the encoder under test.
    static func encode(_ frames: [ChardevTestFrame], framing: ChardevFraming) throws -> [UInt8] {
        let encoder = ChardevFrameEncoder(framing: framing)
        var output: [UInt8] = []
        for frame in frames {
            try frame.vnetHeader.withUnsafeBytes { vnet in
                try frame.ethernet.withUnsafeBytes { ethernet in
                    try encoder.append(vnetHeader: vnet, ethernet: ethernet, to: &output)
                }
            }
        }
        return output
    }

    @Test func encoderWritesTheWireLayoutWithoutVnetField() throws {
        let frame = ChardevTestFrame.pattern(vnetHeaderLength: 0, ethernetLength: 14, seed: 1)
        let bytes = try Self.encode([frame], framing: Self.plain)
        #expect(bytes == [0, 0, 0, 14] + frame.ethernet, "u32 big-endian L = 14, then the frame, no V field")
    }

    @Test func encoderWritesTheWireLayoutWithVnetField() throws {
        let frame = ChardevTestFrame.pattern(vnetHeaderLength: 12, ethernetLength: 60, seed: 2)
        let bytes = try Self.encode([frame], framing: Self.withVnet)
        #expect(bytes == [0, 0, 0, 72, 0, 0, 0, 12] + frame.vnetHeader + frame.ethernet, "L counts V; V = 12")
    }

    @Test func encoderSendsVZeroWhenTheFrameHasNoVnetHeader() throws {
        // What filter-mirror sends for a netdev without a vnet header: V = 0 and no header bytes, no padding.
        let frame = ChardevTestFrame.pattern(vnetHeaderLength: 0, ethernetLength: 20, seed: 3)
        let bytes = try Self.encode([frame], framing: Self.withVnet)
        #expect(bytes == [0, 0, 0, 20, 0, 0, 0, 0] + frame.ethernet)
    }

    @Test(arguments: [false, true])
    func roundTrip(vnetHeaderSupport: Bool) throws {
        let framing = ChardevFraming(vnetHeaderSupport: vnetHeaderSupport)
        let vnetLengths = vnetHeaderSupport ? [0, 10, 12, 20] : [0]
        var frames: [ChardevTestFrame] = []
        for (index, vnetLength) in vnetLengths.enumerated() {
            for ethernetLength in [14, 15, 60, 1514, 9000, ChardevFraming.defaultMaxFrameLength - vnetLength] {
                frames.append(.pattern(vnetHeaderLength: vnetLength, ethernetLength: ethernetLength, seed: index))
            }
        }
        let encoded = try Self.encode(frames, framing: framing)
        #expect(encoded == chardevWire(frames, vnetHeaderSupport: vnetHeaderSupport), "encoder matches WIRE.md §1")
        #expect(try chardevDecode(encoded, framing: framing) == frames)
    }

    @Test func encodeIntoCallerBufferAndForwardDecodedFrame() throws {
        let frame = ChardevTestFrame.pattern(vnetHeaderLength: 10, ethernetLength: 64, seed: 4)
        let encoder = ChardevFrameEncoder(framing: Self.withVnet)
        var output = [UInt8](repeating: 0xEE, count: 100)
        let written = try frame.vnetHeader.withUnsafeBytes { vnet in
            try frame.ethernet.withUnsafeBytes { ethernet in
                try output.withUnsafeMutableBytes { raw in
                    try encoder.encode(vnetHeader: vnet, ethernet: ethernet, into: raw)
                }
            }
        }
        #expect(written == 82)
        #expect(encoder.encodedLength(vnetHeaderLength: 10, ethernetLength: 64) == 82)
        #expect(Array(output[0..<82]) == chardevWire([frame], vnetHeaderSupport: true))
        #expect(output[82...].allSatisfy { $0 == 0xEE }, "nothing written past the frame")

        // colo-compare's forwarding: a decoded frame appended unchanged, vnet header included.
        var decoder = ChardevFrameDecoder(framing: Self.withVnet)
        var forwarded: [UInt8] = []
        var lengths: (vnet: Int, frame: Int, offset: UInt64)?
        try output.withUnsafeBytes { raw in
            try decoder.feed(UnsafeRawBufferPointer(rebasing: raw[0..<written])) { (decoded) throws(ChardevError) in
                lengths = (decoded.vnetHeaderLength, decoded.length, decoded.streamOffset)
                try encoder.append(decoded, to: &forwarded)
            }
        }
        #expect(lengths?.vnet == 10 && lengths?.frame == 74 && lengths?.offset == 0)
        #expect(forwarded == Array(output[0..<82]))
    }

    @Test(arguments: [false, true])
    func thousandRandomFramesSplitAnywhere(vnetHeaderSupport: Bool) throws {
        var random = ChardevSeededRandom(seed: vnetHeaderSupport ? 0x5EED_0001 : 0x5EED_0002)
        let framing = ChardevFraming(vnetHeaderSupport: vnetHeaderSupport)
        var frames: [ChardevTestFrame] = []
        for index in 0..<1000 {
            let vnetLength = vnetHeaderSupport ? [0, 10, 12, 20].randomElement(using: &random) ?? 0 : 0
            let large = Int.random(in: 0..<50, using: &random) == 0
            let ethernetLength =
                large
                ? Int.random(in: 9001...(framing.maxFrameLength - vnetLength), using: &random)
                : Int.random(in: 14...9000, using: &random)
            frames.append(.pattern(vnetHeaderLength: vnetLength, ethernetLength: ethernetLength, seed: index))
        }
        // Frames at both limits, so the largest allowed frame crosses chunk boundaries too.
        let maxVnet = vnetHeaderSupport ? 20 : 0
        frames.insert(
            .pattern(vnetHeaderLength: maxVnet, ethernetLength: framing.maxFrameLength - maxVnet, seed: 1), at: 100)
        frames.insert(.pattern(vnetHeaderLength: maxVnet, ethernetLength: 14, seed: 2), at: 101)
        let stream = chardevWire(frames, vnetHeaderSupport: vnetHeaderSupport)
        #expect(try Self.encode(frames, framing: framing) == stream)

        #expect(try chardevDecode(stream, framing: framing) == frames, "all at once")

        // Chunks of random size: mostly small runs (1–16 bytes) mixed with reads up to 128 KiB.
        var cuts: [Int] = []
        var position = 0
        while true {
            let size =
                Bool.random(using: &random)
                ? Int.random(in: 1...16, using: &random) : Int.random(in: 1...131_072, using: &random)
            position += size
            guard position < stream.count else { break }
            cuts.append(position)
        }
        var decoder = ChardevFrameDecoder(framing: framing)
        #expect(try chardevDecode(stream, with: &decoder, cuts: cuts) == frames, "random chunks")
        #expect(decoder.pendingBytes == 0)
        #expect(decoder.streamOffset == UInt64(stream.count))
        #expect(decoder.reassemblyCapacity <= framing.prefixLength + framing.maxFrameLength, "buffer bounded")

        // Byte by byte over the first 150 frames only (the limit frames among them): the whole stream would take
        // seconds in a debug build and adds no boundary the random chunks above did not already cut.
        let head = Array(frames[0..<150])
        let headStream = chardevWire(head, vnetHeaderSupport: vnetHeaderSupport)
        let oneByteCuts = Array(1..<headStream.count)
        #expect(try chardevDecode(headStream, framing: framing, cuts: oneByteCuts) == head, "1-byte chunks")
    }

    @Test(arguments: [false, true])
    func everySplitOfAThreeFrameStream(vnetHeaderSupport: Bool) throws {
        let framing = ChardevFraming(vnetHeaderSupport: vnetHeaderSupport)
        let frames: [ChardevTestFrame] = [
            .pattern(vnetHeaderLength: vnetHeaderSupport ? 12 : 0, ethernetLength: 14, seed: 1),
            .pattern(vnetHeaderLength: 0, ethernetLength: 33, seed: 2),
            .pattern(vnetHeaderLength: vnetHeaderSupport ? 10 : 0, ethernetLength: 20, seed: 3),
        ]
        let stream = chardevWire(frames, vnetHeaderSupport: vnetHeaderSupport)
        for cut in 0...stream.count {
            #expect(try chardevDecode(stream, framing: framing, cuts: [cut]) == frames, "split at \(cut)")
        }
        for first in 0...stream.count {
            for second in first...stream.count {
                let decoded = try chardevDecode(stream, framing: framing, cuts: [first, second])
                #expect(decoded == frames, "split at \(first) and \(second)")
            }
        }
    }

    @Test func pendingBytesAndFramesDeliveredAsTheyComplete() throws {
        let frames = (1...3).map { ChardevTestFrame.pattern(vnetHeaderLength: 0, ethernetLength: 20, seed: $0) }
        let stream = chardevWire(frames, vnetHeaderSupport: false)  // 24 bytes each
        var decoder = ChardevFrameDecoder()
        var seen: [ChardevTestFrame] = []
        func feed(_ range: Range<Int>) throws {
            try stream.withUnsafeBytes { all in
                try decoder.feed(UnsafeRawBufferPointer(rebasing: all[range])) {
                    seen.append(ChardevTestFrame(vnetHeader: Array($0.vnetHeader), ethernet: Array($0.ethernet)))
                }
            }
        }
        try feed(0..<2)
        #expect(decoder.pendingBytes == 2 && seen.isEmpty)
        try feed(2..<30)
        #expect(decoder.pendingBytes == 6 && seen == [frames[0]], "first frame out as soon as it completes")
        try feed(30..<72)
        #expect(decoder.pendingBytes == 0 && seen == frames)
        try decoder.finish()
    }

    @Test func reassemblyBufferStaysWithinTheLimit() throws {
        let framing = ChardevFraming(vnetHeaderSupport: true)
        let largest = ChardevTestFrame.pattern(
            vnetHeaderLength: 20, ethernetLength: framing.maxFrameLength - 20, seed: 5)
        let stream = chardevWire(Array(repeating: largest, count: 3), vnetHeaderSupport: true)
        var decoder = ChardevFrameDecoder(framing: framing)
        // Cuts that leave every frame split, so each is reassembled.
        let decoded = try chardevDecode(stream, with: &decoder, cuts: [7, 50_000, 100_003, 150_000, 200_001])
        #expect(decoded.count == 3)
        #expect(decoder.reassemblyCapacity == 8 + framing.maxFrameLength, "grown once to the largest frame, no further")
    }
}
