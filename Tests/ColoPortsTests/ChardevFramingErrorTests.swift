import Testing

@testable import ColoPorts

@Suite struct ChardevFramingErrorTests {
    static let plain = ChardevFraming()
    static let withVnet = ChardevFraming(vnetHeaderSupport: true)
    static let goodFrame = ChardevTestFrame.pattern(vnetHeaderLength: 0, ethernetLength: 60, seed: 9)

    @Test func zeroLengthFrame() {
        #expect(
            chardevDecodeError([0, 0, 0, 0], framing: Self.plain) == .zeroLength(channel: .packets, streamOffset: 0))
        // After one good frame (64 bytes on the wire) the error names where the bad one starts.
        let stream = chardevWire([Self.goodFrame], vnetHeaderSupport: false) + [0, 0, 0, 0]
        let error = chardevDecodeError(stream, framing: Self.plain)
        #expect(error == .zeroLength(channel: .packets, streamOffset: 64))
        #expect(error?.description == "zero-length frame at stream byte 64")
    }

    @Test func frameAtTheLimitIsAcceptedAndOneMoreIsNot() throws {
        let atLimit = ChardevTestFrame.pattern(vnetHeaderLength: 0, ethernetLength: 69_632, seed: 1)
        #expect(try chardevDecode(chardevWire([atLimit], vnetHeaderSupport: false), framing: Self.plain) == [atLimit])

        let error = chardevDecodeError(chardevBigEndian(69_633), framing: Self.plain)
        #expect(error == .lengthTooLarge(channel: .packets, length: 69_633, limit: 69_632, streamOffset: 0))
        #expect(error?.description == "frame length 69633 exceeds the 69632-byte limit at stream byte 0")
    }

    @Test func hugeLengthFailsAtOnceWithoutReserving() {
        // Fed a byte at a time: the error comes with the 4th byte, before any payload is awaited or reserved.
        var decoder = ChardevFrameDecoder(framing: Self.withVnet)
        let prefix: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF]
        var thrown: ChardevError?
        for index in prefix.indices {
            do {
                _ = try chardevDecode([prefix[index]], with: &decoder)
            } catch {
                thrown = error as? ChardevError
                #expect(index == 3, "error only once the length is complete")
                break
            }
        }
        #expect(thrown == .lengthTooLarge(channel: .packets, length: 0xFFFF_FFFF, limit: 69_632, streamOffset: 0))
        #expect(decoder.reassemblyCapacity <= 8, "no reservation for the claimed 4 GiB")
    }

    @Test func vnetHeaderLengthLimit() throws {
        let atLimit = ChardevTestFrame.pattern(vnetHeaderLength: 20, ethernetLength: 14, seed: 1)
        #expect(try chardevDecode(chardevWire([atLimit], vnetHeaderSupport: true), framing: Self.withVnet) == [atLimit])

        let error = chardevDecodeError(chardevBigEndian(60) + chardevBigEndian(21), framing: Self.withVnet)
        #expect(error == .vnetHeaderTooLong(length: 21, limit: 20, streamOffset: 0))
        #expect(error?.description == "vnet header length 21 exceeds 20 at stream byte 0")

        // The limit is configurable for headers newer than the 20-byte hash-report one.
        let wider = ChardevFraming(vnetHeaderSupport: true, maxVnetHeaderLength: 24)
        let tunnel = ChardevTestFrame.pattern(vnetHeaderLength: 24, ethernetLength: 14, seed: 2)
        #expect(try chardevDecode(chardevWire([tunnel], vnetHeaderSupport: true), framing: wider) == [tunnel])
    }

    @Test func vnetHeaderLongerThanTheFrame() {
        let error = chardevDecodeError(chardevBigEndian(16) + chardevBigEndian(18), framing: Self.withVnet)
        #expect(error == .vnetHeaderExceedsFrame(vnetHeaderLength: 18, frameLength: 16, streamOffset: 0))
        #expect(error?.description == "vnet header length 18 exceeds the frame length 16 at stream byte 0")
    }

    @Test func lessThanAnEthernetHeaderAfterTheVnetHeader() {
        let withHeader = chardevDecodeError(chardevBigEndian(23) + chardevBigEndian(10), framing: Self.withVnet)
        #expect(withHeader == .frameShorterThanEthernetHeader(frameLength: 23, vnetHeaderLength: 10, streamOffset: 0))
        #expect(
            withHeader?.description
                == "frame of 23 bytes holds 13 bytes after its 10-byte vnet header, less than an Ethernet header (14) "
                + "at stream byte 0")

        let plain = chardevDecodeError(chardevBigEndian(13), framing: Self.plain)
        #expect(plain == .frameShorterThanEthernetHeader(frameLength: 13, vnetHeaderLength: 0, streamOffset: 0))
        #expect(plain?.description == "frame of 13 bytes is shorter than an Ethernet header (14) at stream byte 0")
    }

    @Test func streamEndingMidFrame() throws {
        let wire = chardevWire([Self.goodFrame, Self.goodFrame], vnetHeaderSupport: false)  // 64 bytes each
        var decoder = ChardevFrameDecoder()
        let decoded = try chardevDecode(Array(wire[0..<100]), with: &decoder)
        #expect(decoded == [Self.goodFrame])
        #expect(decoder.pendingBytes == 36)
        #expect(throws: ChardevError.truncatedStream(channel: .packets, present: 36, expected: 64, streamOffset: 64)) {
            try decoder.finish()
        }

        var midPrefix = ChardevFrameDecoder(framing: Self.withVnet)
        _ = try chardevDecode([0, 0, 0, 60, 0, 0], with: &midPrefix)
        #expect(midPrefix.pendingBytes == 6)
        let error = ChardevError.truncatedStream(channel: .packets, present: 6, expected: nil, streamOffset: 0)
        #expect(throws: error) { try midPrefix.finish() }
        #expect(error.description == "stream ended inside a frame: 6 bytes of its length prefix at stream byte 0")
    }

    @Test func poisonedDecoderRefusesInputUntilReset() throws {
        var decoder = ChardevFrameDecoder()
        let first = ChardevError.zeroLength(channel: .packets, streamOffset: 0)
        #expect(throws: first) { _ = try chardevDecode([0, 0, 0, 0], with: &decoder) }
        #expect(decoder.failure == first)
        let good = chardevWire([Self.goodFrame], vnetHeaderSupport: false)
        #expect(throws: ChardevError.poisoned(after: first)) { _ = try chardevDecode(good, with: &decoder) }
        #expect(throws: ChardevError.poisoned(after: first)) { _ = try chardevDecode([], with: &decoder) }
        #expect(
            ChardevError.poisoned(after: first).description
                == "input refused after an earlier framing error: zero-length frame at stream byte 0")

        decoder.reset()
        #expect(try chardevDecode(good, with: &decoder) == [Self.goodFrame], "a reset decoder starts a new stream")
    }

    @Test func errorFromTheCallbackPoisonsTheDecoder() throws {
        let stream = chardevWire([Self.goodFrame, Self.goodFrame], vnetHeaderSupport: false)
        var decoder = ChardevFrameDecoder()
        var delivered = 0
        let stop = ChardevError.outputTooSmall(needed: 1, available: 0)
        #expect(throws: stop) {
            try stream.withUnsafeBytes { raw in
                try decoder.feed(raw) { (_) throws(ChardevError) in
                    delivered += 1
                    throw stop
                }
            }
        }
        #expect(delivered == 1, "decoding stops at the callback's error")
        #expect(decoder.failure == stop)
    }

    @Test func encoderRefusesWhatNoReaderAccepts() throws {
        let ethernet = [UInt8](repeating: 1, count: 14)
        let vnet = [UInt8](repeating: 0, count: 12)
        func append(_ framing: ChardevFraming, vnet: [UInt8], ethernet: [UInt8]) -> ChardevError? {
            var output: [UInt8] = []
            do {
                try vnet.withUnsafeBytes { vnetBytes in
                    try ethernet.withUnsafeBytes { ethernetBytes in
                        try ChardevFrameEncoder(framing: framing).append(
                            vnetHeader: vnetBytes, ethernet: ethernetBytes, to: &output)
                    }
                }
                return nil
            } catch {
                #expect(output.isEmpty, "nothing appended on error")
                return error as? ChardevError
            }
        }
        let noSupport = append(Self.plain, vnet: vnet, ethernet: ethernet)
        #expect(noSupport == .vnetHeaderWithoutSupport(length: 12))
        #expect(noSupport?.description == "frame has a 12-byte vnet header but the connection has vnet_hdr_support=off")
        #expect(
            append(Self.withVnet, vnet: Array(repeating: 0, count: 21), ethernet: ethernet)
                == .vnetHeaderTooLong(length: 21, limit: 20, streamOffset: nil))
        #expect(
            append(Self.withVnet, vnet: vnet, ethernet: Array(ethernet[0..<13]))
                == .frameShorterThanEthernetHeader(frameLength: 25, vnetHeaderLength: 12, streamOffset: nil))
        let tooLong = append(Self.withVnet, vnet: vnet, ethernet: Array(repeating: 1, count: 69_621))
        #expect(tooLong == .lengthTooLarge(channel: .packets, length: 69_633, limit: 69_632, streamOffset: nil))
        #expect(tooLong?.description == "frame length 69633 exceeds the 69632-byte limit")

        var small = [UInt8](repeating: 0, count: 17)
        #expect(throws: ChardevError.outputTooSmall(needed: 18, available: 17)) {
            try ethernet.withUnsafeBytes { ethernetBytes in
                try small.withUnsafeMutableBytes { raw in
                    try ChardevFrameEncoder().encode(ethernet: ethernetBytes, into: raw)
                }
            }
        }
    }
}
