import Testing

@testable import ColoPorts

@Suite struct ChardevNotifyTests {
    static func wire(_ text: String) -> [UInt8] {
        chardevBigEndian(UInt32(text.utf8.count)) + Array(text.utf8)
    }

    static func decodeError(_ stream: [UInt8], maxMessageLength: Int = 4096) -> ChardevError? {
        var decoder = NotifyMessageDecoder(maxMessageLength: maxMessageLength)
        do {
            _ = try chardevDecodeNotify(stream, with: &decoder)
            try decoder.finish()
            return nil
        } catch {
            return error as? ChardevError
        }
    }

    @Test func messagesHaveTheTextsOnTheWire() throws {
        let expected: [NotifyMessage: String] = [
            .doCheckpoint: "DO_CHECKPOINT", .checkpointDone: "COLO_CHECKPOINT",
            .proxyInit: "COLO_USERSPACE_PROXY_INIT", .proxyInitReply: "COLO_COMPARE_GET_XEN_INIT",
        ]
        for message in NotifyMessage.allCases {
            let text = try #require(expected[message])
            #expect(message.text == text)
            var appended: [UInt8] = []
            message.append(to: &appended)
            #expect(appended == Self.wire(text), "\(message): 4-byte length and the text, no NUL")
            #expect(message.encodedLength == appended.count)

            var buffer = [UInt8](repeating: 0, count: 64)
            let written = try buffer.withUnsafeMutableBytes { raw in try message.encode(into: raw) }
            #expect(Array(buffer[0..<written]) == appended)
        }
    }

    @Test func roundTripSplitAtEveryByte() throws {
        let messages: [NotifyMessage] = [.proxyInit, .proxyInitReply, .doCheckpoint, .checkpointDone, .doCheckpoint]
        var stream: [UInt8] = []
        for message in messages { message.append(to: &stream) }
        for cut in 0...stream.count {
            var decoder = NotifyMessageDecoder()
            #expect(try chardevDecodeNotify(stream, with: &decoder, cuts: [cut]) == messages, "split at \(cut)")
            try decoder.finish()
        }
        var decoder = NotifyMessageDecoder()
        #expect(try chardevDecodeNotify(stream, with: &decoder, cuts: Array(1..<stream.count)) == messages)
        #expect(decoder.pendingBytes == 0)
    }

    @Test func unknownMessage() {
        let stream = Self.wire("DO_CHECKPOINT") + Self.wire("COLO_FAILOVER")
        let error = Self.decodeError(stream)
        #expect(error == .unknownNotifyMessage(text: "COLO_FAILOVER", length: 13, streamOffset: 17))
        #expect(error?.description == "unknown notify message \"COLO_FAILOVER\" (13 bytes) at stream byte 17")

        // Case matters, and a known text with anything after it is not the known message.
        #expect(Self.decodeError(Self.wire("do_checkpoint")) != nil)
        #expect(Self.decodeError(Self.wire("DO_CHECKPOINT\n")) != nil)

        let odd = Self.decodeError(chardevBigEndian(4) + [0x41, 0x22, 0xC3, 0x7F])
        #expect(odd == .unknownNotifyMessage(text: "A\\x22\\xc3\\x7f", length: 4, streamOffset: 0), "escaped")
        let long = Self.decodeError(Self.wire(String(repeating: "X", count: 100)))
        #expect(
            long == .unknownNotifyMessage(text: String(repeating: "X", count: 64) + "...", length: 100, streamOffset: 0)
        )
    }

    @Test func nulInsideOrAfterTheText() {
        let inside = Self.decodeError(chardevBigEndian(14) + Array("DO_CHECK".utf8) + [0] + Array("POINT".utf8))
        #expect(inside == .nulInNotifyMessage(position: 8, length: 14, streamOffset: 0))
        #expect(inside?.description == "NUL byte at position 8 of a 14-byte notify message at stream byte 0")
        // A C-style terminator is refused too: the channel sends strlen bytes.
        let terminated = Self.decodeError(chardevBigEndian(14) + Array("DO_CHECKPOINT".utf8) + [0])
        #expect(terminated == .nulInNotifyMessage(position: 13, length: 14, streamOffset: 0))
    }

    @Test func oversizeAndZeroLength() {
        let oversize = Self.decodeError(chardevBigEndian(4097))
        #expect(oversize == .lengthTooLarge(channel: .notify, length: 4097, limit: 4096, streamOffset: 0))
        #expect(oversize?.description == "notify message length 4097 exceeds the 4096-byte limit at stream byte 0")
        #expect(
            Self.decodeError([0xFF, 0xFF, 0xFF, 0xFF], maxMessageLength: 64)
                == .lengthTooLarge(channel: .notify, length: 0xFFFF_FFFF, limit: 64, streamOffset: 0))
        let zero = Self.decodeError([0, 0, 0, 0])
        #expect(zero == .zeroLength(channel: .notify, streamOffset: 0))
        #expect(zero?.description == "zero-length notify message at stream byte 0")
    }

    @Test func truncatedAndPoisoned() throws {
        var decoder = NotifyMessageDecoder()
        let partial = Array(Self.wire("DO_CHECKPOINT")[0..<10])
        #expect(try chardevDecodeNotify(partial, with: &decoder).isEmpty)
        #expect(decoder.pendingBytes == 10)
        let truncated = ChardevError.truncatedStream(channel: .notify, present: 10, expected: 17, streamOffset: 0)
        #expect(throws: truncated) { try decoder.finish() }

        var poisoned = NotifyMessageDecoder()
        let first = ChardevError.unknownNotifyMessage(text: "HELLO", length: 5, streamOffset: 0)
        #expect(throws: first) { _ = try chardevDecodeNotify(Self.wire("HELLO"), with: &poisoned) }
        #expect(throws: ChardevError.poisoned(after: first)) {
            _ = try chardevDecodeNotify(Self.wire("DO_CHECKPOINT"), with: &poisoned)
        }
        poisoned.reset()
        #expect(try chardevDecodeNotify(Self.wire("DO_CHECKPOINT"), with: &poisoned) == [.doCheckpoint])
    }
}
