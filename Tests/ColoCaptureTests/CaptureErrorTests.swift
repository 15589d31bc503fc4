import ColoPacket
import Testing

@testable import ColoCapture

@Suite struct CaptureErrorTests {
    static func smallPcap() -> (bytes: [UInt8], boundaries: [Int: Int]) {
        let sizes = [10, 0, 5]
        let bytes = PcapFixture.file(
            bigEndian: false, nanoseconds: false,
            records: sizes.map { PcapTestRecord(seconds: 1, fraction: 2, data: patternBytes(count: $0, seed: 1)) })
        // Prefix length → records a reader must return when the file ends exactly there.
        var boundaries = [24: 0]
        var offset = 24
        for (index, size) in sizes.enumerated() {
            offset += 16 + size
            boundaries[offset] = index + 1
        }
        return (bytes, boundaries)
    }

    static func smallPcapng() -> (bytes: [UInt8], boundaries: [Int: Int]) {
        let blocks: [([UInt8], Int)] = [
            (PcapngFixture.sectionHeader(bigEndian: true), 0),
            (PcapngFixture.interfaceDescription(bigEndian: true, linkType: 1, resolution: 9), 0),
            (PcapngFixture.enhancedPacket(bigEndian: true, interface: 0, units: 5, data: [1, 2, 3]), 1),
            (PcapngFixture.block(type: 5, body: [0, 0, 0, 0], bigEndian: true), 0),
            (PcapngFixture.simplePacket(bigEndian: true, originalLength: 2, data: [7, 7]), 1),
        ]
        var bytes: [UInt8] = []
        var boundaries: [Int: Int] = [:]
        var records = 0
        for (block, recordCount) in blocks {
            bytes += block
            records += recordCount
            boundaries[bytes.count] = records
        }
        return (bytes, boundaries)
    }

    @Test(arguments: ["pcap", "pcapng"])
    func truncationAtEveryByteThrowsOrEndsCleanlyAtABoundary(format: String) {
        let (bytes, boundaries) = format == "pcap" ? Self.smallPcap() : Self.smallPcapng()
        for length in 0...bytes.count {
            let result = readCapture(bytes: Array(bytes.prefix(length)))
            if let records = boundaries[length] {
                #expect(result.success?.count == records, "cut at \(length) of \(bytes.count) is a record boundary")
            } else {
                #expect(result.failure != nil, "cut at \(length) of \(bytes.count) must be reported as an error")
            }
        }
    }

    @Test func emptyFile() {
        let file = TemporaryFile([])
        #expect(readCapture(file.path).failure == .emptyFile(path: file.path))
    }

    @Test func randomFourBytesNameTheMagic() throws {
        let file = TemporaryFile([0xDE, 0xAD, 0xBE, 0xEF])
        let error = try #require(readCapture(file.path).failure)
        #expect(error == .unknownMagic(path: file.path, magic: 0xDEAD_BEEF))
        #expect(error.description.contains("de ad be ef"), "message shows the bytes: \(error)")
    }

    @Test func fileShorterThanAMagicNumber() {
        let file = TemporaryFile([0xA1, 0xB2])
        #expect(
            readCapture(file.path).failure
                == .truncatedFileHeader(path: file.path, format: nil, expected: 4, present: 2))
    }

    @Test func truncatedGlobalHeader() {
        let header = PcapFixture.file(bigEndian: true, nanoseconds: true, records: [])
        let file = TemporaryFile(Array(header.prefix(10)))
        #expect(
            readCapture(file.path).failure
                == .truncatedFileHeader(path: file.path, format: .pcap(.nanoseconds), expected: 24, present: 10))
    }

    @Test func truncatedRecordMessageSaysWhereAndHowMuch() throws {
        let bytes = PcapFixture.file(
            bigEndian: false, nanoseconds: false,
            records: [
                PcapTestRecord(seconds: 1, fraction: 0, data: [1, 2]),
                PcapTestRecord(seconds: 1, fraction: 0, data: patternBytes(count: 1514, seed: 0)),
            ])
        let file = TemporaryFile(Array(bytes.prefix(24 + 18 + 16 + 300)))
        let error = try #require(readCapture(file.path).failure)
        #expect(error == .truncatedRecord(path: file.path, record: 2, offset: 42, expected: 1514, present: 300))
        #expect(
            error.description == "\(file.path): record 2 at byte 42 is truncated (header says 1514 bytes, 300 present)")
    }

    @Test func hugeCapturedLengthIsRefusedBeforeAllocating() {
        let bytes = PcapFixture.file(
            bigEndian: true, nanoseconds: false,
            records: [
                PcapTestRecord(seconds: 1, fraction: 0, data: [1, 2, 3], declaredLength: 0xFFFF_FFFF)
            ])
        let file = TemporaryFile(bytes)
        #expect(
            readCapture(file.path).failure
                == .recordTooLarge(path: file.path, record: 1, offset: 24, length: 0xFFFF_FFFF, limit: 262_144))
    }

    static func pcapngPrefix() -> [UInt8] {
        PcapngFixture.sectionHeader(bigEndian: false)
            + PcapngFixture.interfaceDescription(bigEndian: false, linkType: 1)
    }

    @Test(
        arguments: [
            (6, 0, .shorterThanMinimum(32)),
            (6, 7, .shorterThanMinimum(32)),
            (6, 34, .notMultipleOfFour),
            (4, 0, .shorterThanMinimum(12)),
            (4, 7, .shorterThanMinimum(12)),
            (4, 14, .notMultipleOfFour),
            (6, 0xFFFF_FFF0, .largerThanLimit(262_144 + 65_536)),
        ] as [(UInt32, UInt32, CaptureError.BlockLengthProblem)])
    func badBlockLengths(blockType: UInt32, declaredLength: UInt32, problem: CaptureError.BlockLengthProblem) {
        let prefix = Self.pcapngPrefix()
        let block = PcapngFixture.block(
            type: blockType, body: [UInt8](repeating: 0, count: 40), bigEndian: false, declaredLength: declaredLength)
        let file = TemporaryFile(prefix + block)
        #expect(
            readCapture(file.path).failure
                == .badBlockLength(
                    path: file.path, offset: prefix.count, blockType: blockType,
                    length: Int(declaredLength), problem: problem))
    }

    @Test(arguments: [UInt32(6), 4, 0x0A0D_0D0A])
    func trailerMismatch(blockType: UInt32) {
        let prefix = Self.pcapngPrefix()
        var body = [UInt8](repeating: 0, count: 40)
        if blockType == 0x0A0D_0D0A {
            body = Array(PcapngFixture.sectionHeader(bigEndian: false)[8..<24]) + [UInt8](repeating: 0, count: 24)
        }
        let block = PcapngFixture.block(type: blockType, body: body, bigEndian: false, trailer: 48)
        let file = TemporaryFile(prefix + block)
        #expect(
            readCapture(file.path).failure
                == .badBlockLength(
                    path: file.path, offset: prefix.count, blockType: blockType, length: 52,
                    problem: .trailerMismatch(trailer: 48)))
    }

    @Test func hugeUnknownBlockIsStreamedPastAndReportedTruncated() {
        let prefix = Self.pcapngPrefix()
        let block = PcapngFixture.block(
            type: 0x4000_0001, body: [UInt8](repeating: 0, count: 40), bigEndian: false, declaredLength: 0x7FFF_FFF0)
        let file = TemporaryFile(prefix + block)
        #expect(
            readCapture(file.path).failure
                == .truncatedBlock(
                    path: file.path, offset: prefix.count, blockType: 0x4000_0001,
                    expected: 0x7FFF_FFF0, present: block.count))
    }

    @Test func enhancedPacketNamingAnUndeclaredInterface() {
        let prefix = Self.pcapngPrefix()
        let file = TemporaryFile(
            prefix + PcapngFixture.enhancedPacket(bigEndian: false, interface: 1, units: 0, data: [1]))
        #expect(
            readCapture(file.path).failure
                == .unknownInterface(path: file.path, record: 1, offset: prefix.count, interface: 1, known: 1))
    }

    @Test func newSectionForgetsThePreviousSectionsInterfaces() {
        var bytes = PcapngFixture.sectionHeader(bigEndian: false)
        bytes += PcapngFixture.interfaceDescription(bigEndian: false, linkType: 1)
        bytes += PcapngFixture.interfaceDescription(bigEndian: false, linkType: 1)
        bytes += PcapngFixture.sectionHeader(bigEndian: true)
        let offset = bytes.count
        bytes += PcapngFixture.simplePacket(bigEndian: true, originalLength: 1, data: [1])
        let file = TemporaryFile(bytes)
        #expect(
            readCapture(file.path).failure
                == .unknownInterface(path: file.path, record: 1, offset: offset, interface: 0, known: 0))
    }

    @Test func capturedLengthLargerThanTheBlock() throws {
        let prefix = Self.pcapngPrefix()
        var block = PcapngFixture.enhancedPacket(bigEndian: false, interface: 0, units: 0, data: [1, 2, 3, 4])
        block[20] = 200  // captured length low byte (little-endian)
        let error = try #require(readCapture(bytes: prefix + block).failure)
        guard case .malformedBlock(_, prefix.count, 6, _) = error else {
            Issue.record("expected malformedBlock at \(prefix.count), got \(error)")
            return
        }
    }

    @Test func badByteOrderMagic() throws {
        var bytes = PcapngFixture.sectionHeader(bigEndian: false)
        bytes[8] = 0x11
        let error = try #require(readCapture(bytes: bytes).failure)
        guard case .malformedBlock(_, 0, 0x0A0D_0D0A, _) = error else {
            Issue.record("expected malformedBlock for the byte-order magic, got \(error)")
            return
        }
    }

    @Test func laterCallsRethrowTheFirstError() throws {
        let bytes = PcapFixture.file(
            bigEndian: false, nanoseconds: false,
            records: [
                PcapTestRecord(seconds: 1, fraction: 0, data: [1, 2]),
                PcapTestRecord(seconds: 1, fraction: 0, data: [1, 2, 3], declaredLength: 0x0100_0000),
            ])
        let file = TemporaryFile(bytes)
        let reader = try CaptureReader(path: file.path)
        #expect(try reader.next() != nil)
        let expected = CaptureError.recordTooLarge(
            path: file.path, record: 2, offset: 42, length: 0x0100_0000, limit: 262_144)
        #expect(throws: expected) { try reader.next() }
        #expect(throws: expected) { try reader.next() }
    }

    @Test func missingFileAndDirectoryReportErrno() {
        #expect(
            readCapture("/nonexistent/none.pcap").failure
                == .cannotOpen(path: "/nonexistent/none.pcap", errno: 2))
        // A directory opens fine but read(2) fails with EISDIR.
        #expect(readCapture("/tmp").failure == .readFailed(path: "/tmp", offset: 0, errno: 21))
    }
}
