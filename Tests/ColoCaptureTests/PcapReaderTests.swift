import ColoPacket
import Testing

@testable import ColoCapture

@Suite struct PcapReaderTests {
    struct Variant: CustomTestStringConvertible, Sendable {
        var bigEndian: Bool
        var nanoseconds: Bool
        var testDescription: String {
            "\(bigEndian ? "big" : "little")-endian \(nanoseconds ? "ns" : "µs")"
        }
    }

    static let variants = [
        Variant(bigEndian: true, nanoseconds: false), Variant(bigEndian: false, nanoseconds: false),
        Variant(bigEndian: true, nanoseconds: true), Variant(bigEndian: false, nanoseconds: true),
    ]

    @Test(arguments: variants)
    func handBuiltFilesReadInEitherByteOrderAndResolution(variant: Variant) throws {
        let fraction: UInt32 = variant.nanoseconds ? 999_999_999 : 999_999
        let bytes = PcapFixture.file(
            bigEndian: variant.bigEndian, nanoseconds: variant.nanoseconds,
            records: [
                PcapTestRecord(seconds: 1_700_000_000, fraction: fraction, data: patternBytes(count: 42, seed: 1)),
                PcapTestRecord(seconds: UInt32.max, fraction: 0, data: [0xAB], originalLength: 1514),
            ])
        let file = TemporaryFile(bytes)
        let reader = try CaptureReader(path: file.path)
        #expect(reader.format == .pcap(variant.nanoseconds ? .nanoseconds : .microseconds))
        #expect(
            reader.interfaces == [
                CaptureInterface(
                    rawLinkType: 1, snapshotLength: 65_535, timestampScale: .microseconds,
                    timestampOffsetSeconds: 0)
            ])
        let first = try #require(try reader.next())
        #expect(Array(first.bytes) == patternBytes(count: 42, seed: 1))
        #expect(first.timestampNanoseconds == 1_700_000_000_999_999_999 - (variant.nanoseconds ? 0 : 999))
        #expect(first.originalLength == 42)
        #expect(first.number == 1)
        #expect(first.fileOffset == 24)
        let second = try #require(try reader.next())
        #expect(Array(second.bytes) == [0xAB])
        #expect(second.timestampNanoseconds == UInt64(UInt32.max) * 1_000_000_000)
        #expect(second.originalLength == 1514)
        #expect(second.number == 2)
        #expect(second.fileOffset == 24 + 16 + 42)
        #expect(try reader.next() == nil)
        #expect(try reader.next() == nil, "end of file stays end of file")
    }

    @Test(
        arguments: [
            (1, .ethernet), (101, .rawIP), (228, .rawIPv4), (229, .rawIPv6), (12, .rawIP), (14, .rawIP),
            // The upper 16 bits hold FCS information and must not change the link type.
            (0x1000_0001, .ethernet),
        ] as [(UInt32, LinkType)])
    func linkTypesMapToLinkType(value: UInt32, expected: LinkType) throws {
        let bytes = PcapFixture.file(
            bigEndian: false, nanoseconds: false, linkType: value,
            records: [
                PcapTestRecord(seconds: 1, fraction: 0, data: [0x45])
            ])
        let records = try #require(readCapture(bytes: bytes).success)
        #expect(records.map(\.linkType) == [expected])
    }

    @Test func unsupportedLinkTypeIsReportedByNumber() {
        let bytes = PcapFixture.file(bigEndian: false, nanoseconds: false, linkType: 113, records: [])
        let error = readCapture(bytes: bytes).failure
        guard case .unsupportedLinkType(_, 113, 0) = error else {
            Issue.record("expected unsupportedLinkType 113, got \(String(describing: error))")
            return
        }
    }

    @Test func unsupportedVersionIsRejected() {
        let bytes = PcapFixture.file(bigEndian: true, nanoseconds: false, version: (3, 0), records: [])
        let error = readCapture(bytes: bytes).failure
        guard case .unsupportedVersion(_, .pcap(.microseconds), 0, 3, 0) = error else {
            Issue.record("expected unsupportedVersion 3.0, got \(String(describing: error))")
            return
        }
    }

    @Test func recordBytesStayValidUntilTheNextCall() throws {
        let records = (0..<50).map {
            PcapTestRecord(
                seconds: UInt32($0), fraction: 0,
                data: patternBytes(
                    count: 3000, seed: UInt8($0)))
        }
        let file = TemporaryFile(PcapFixture.file(bigEndian: false, nanoseconds: false, records: records))
        let reader = try CaptureReader(path: file.path)
        var seen = 0
        while let record = try reader.next() {
            #expect(Array(record.bytes) == patternBytes(count: 3000, seed: UInt8(seen)))
            seen += 1
        }
        #expect(seen == 50)
    }
}

@Suite struct StreamingTests {
    @Test func bufferStaysBoundedOnALongFile() throws {
        let file = TemporaryFile()
        let writer = try PcapWriter(path: file.path, linkType: .ethernet)
        let frame = patternBytes(count: 1514, seed: 9)
        for index in 0..<5_000 {
            try writer.write(bytes: frame, timestampNanoseconds: UInt64(index))
        }
        try writer.close()
        let reader = try CaptureReader(path: file.path)
        var count = 0
        while let record = try reader.next() {
            count += 1
            #expect(record.bytes.count == 1514)
        }
        #expect(count == 5_000)
        #expect(reader.bufferCapacity == CaptureReader.readAheadChunk, "7.5 MB of records fit the read-ahead buffer")
    }

    @Test func bufferGrowsOnlyToTheLargestRecord() throws {
        let file = TemporaryFile()
        let writer = try PcapWriter(path: file.path, linkType: .ethernet)
        try writer.write(bytes: patternBytes(count: 100, seed: 1), timestampNanoseconds: 0)
        try writer.write(bytes: patternBytes(count: 150_000, seed: 2), timestampNanoseconds: 0)
        try writer.write(bytes: patternBytes(count: 100, seed: 3), timestampNanoseconds: 0)
        try writer.close()
        let reader = try CaptureReader(path: file.path)
        while try reader.next() != nil {}
        #expect(reader.bufferCapacity >= 150_016)
        #expect(reader.bufferCapacity <= 150_016 + 4096)
    }
}
