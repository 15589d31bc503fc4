import ColoPacket
import Testing

@testable import ColoCapture

@Suite struct PcapWriterTests {
    @Test(arguments: [PcapTimestampResolution.microseconds, .nanoseconds])
    func writtenRecordsReadBackUnchanged(resolution: PcapTimestampResolution) throws {
        let file = TemporaryFile()
        let writer = try PcapWriter(path: file.path, linkType: .ethernet, resolution: resolution)
        let first = patternBytes(count: 60, seed: 1)
        let second = patternBytes(count: 1514, seed: 2)
        let third: [UInt8] = []
        try writer.write(bytes: first, timestampNanoseconds: 1_700_000_000_123_456_789)
        try writer.write(bytes: second, timestampNanoseconds: 1_700_000_001_000_000_999, originalLength: 9000)
        try writer.write(bytes: third, timestampNanoseconds: 0)
        try writer.close()

        let reader = try CaptureReader(path: file.path)
        #expect(reader.format == .pcap(resolution))
        #expect(reader.interfaces.first?.snapshotLength == PcapWriter.defaultSnapshotLength)
        let records = try CaptureReader.readAll(path: file.path)
        // µs files lose the sub-microsecond digits; ns files keep them all.
        let expectedTimes: [UInt64] =
            resolution == .microseconds
            ? [1_700_000_000_123_456_000, 1_700_000_001_000_000_000, 0]
            : [1_700_000_000_123_456_789, 1_700_000_001_000_000_999, 0]
        #expect(records.map(\.bytes) == [first, second, third])
        #expect(records.map(\.timestampNanoseconds) == expectedTimes)
        #expect(records.map(\.originalLength) == [60, 9000, 0])
        #expect(records.allSatisfy { $0.linkType == .ethernet && $0.interfaceIndex == 0 })
    }

    @Test func recordLargerThanTheWriteBufferIsWrittenWhole() throws {
        let file = TemporaryFile()
        let writer = try PcapWriter(path: file.path, linkType: .rawIPv4)
        let small = patternBytes(count: 100, seed: 3)
        let big = patternBytes(count: 200_000, seed: 4)
        try writer.write(bytes: small, timestampNanoseconds: 1_000)
        try writer.write(bytes: big, timestampNanoseconds: 2_000)
        try writer.write(bytes: small, timestampNanoseconds: 3_000)
        try writer.close()
        let records = try CaptureReader.readAll(path: file.path)
        #expect(records.map(\.bytes) == [small, big, small])
        #expect(records.map(\.linkType) == [.rawIPv4, .rawIPv4, .rawIPv4])
    }

    @Test func packetsLongerThanTheSnapshotLengthAreCutKeepingTheirOriginalLength() throws {
        let file = TemporaryFile()
        let writer = try PcapWriter(path: file.path, linkType: .ethernet, snapshotLength: 64)
        let frame = patternBytes(count: 1514, seed: 5)
        try writer.write(bytes: frame, timestampNanoseconds: 0)
        try writer.close()
        let records = try CaptureReader.readAll(path: file.path)
        #expect(records.first?.bytes == Array(frame.prefix(64)))
        #expect(records.first?.originalLength == 1514)
    }

    @Test func headerIsInHostOrderWithVersion24() throws {
        let file = TemporaryFile()
        let writer = try PcapWriter(path: file.path, linkType: .rawIPv6, resolution: .nanoseconds)
        try writer.close()
        let bytes = file.contents()
        #expect(bytes.count == 24, "an empty capture is just the global header")
        let words = bytes.withUnsafeBytes { raw in
            (0..<6).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self) }
        }
        #expect(words[0] == 0xA1B2_3C4D)
        #expect(words[1] == UInt32(2) | UInt32(4) << 16)
        #expect(words[4] == 262_144)
        #expect(words[5] == 229)
    }

    @Test func deinitFlushesBufferedRecords() throws {
        let file = TemporaryFile()
        do {
            let writer = try PcapWriter(path: file.path, linkType: .ethernet)
            try writer.write(bytes: [1, 2, 3], timestampNanoseconds: 5_000)
        }
        let records = try CaptureReader.readAll(path: file.path)
        #expect(records.map(\.bytes) == [[1, 2, 3]])
    }

    @Test func explicitFlushMakesRecordsVisibleBeforeClose() throws {
        let file = TemporaryFile()
        let writer = try PcapWriter(path: file.path, linkType: .ethernet)
        try writer.write(bytes: [9, 9], timestampNanoseconds: 1)
        try writer.flush()
        #expect(file.contents().count == 24 + 16 + 2)
        try writer.close()
    }

    @Test func timestampsPast2106AreRejected() throws {
        let file = TemporaryFile()
        let writer = try PcapWriter(path: file.path, linkType: .ethernet)
        let tooLate = (UInt64(UInt32.max) + 1) * 1_000_000_000
        #expect(throws: CaptureError.timestampNotRepresentable(path: file.path, nanoseconds: tooLate)) {
            try writer.write(bytes: [1], timestampNanoseconds: tooLate)
        }
    }

    @Test func writingAfterCloseThrows() throws {
        let file = TemporaryFile()
        let writer = try PcapWriter(path: file.path, linkType: .ethernet)
        try writer.close()
        try writer.close()
        #expect(throws: CaptureError.writerClosed(path: file.path)) {
            try writer.write(bytes: [1], timestampNanoseconds: 0)
        }
    }

    @Test func unwritableDirectoryReportsErrno() {
        #expect(throws: CaptureError.cannotOpen(path: "/nonexistent-dir/x.pcap", errno: 2)) {
            _ = try PcapWriter(path: "/nonexistent-dir/x.pcap", linkType: .ethernet)
        }
    }
}
