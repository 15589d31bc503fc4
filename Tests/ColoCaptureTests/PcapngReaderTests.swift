import ColoPacket
import Testing

@testable import ColoCapture

@Suite struct PcapngReaderTests {
    /// Two sections in opposite byte orders, interfaces with different link types and timestamp units, packets that
    /// need padding, a Simple Packet, and blocks the reader must step over.
    static func twoSectionFile() -> [UInt8] {
        var file: [UInt8] = []
        file += PcapngFixture.sectionHeader(bigEndian: false)
        file += PcapngFixture.interfaceDescription(bigEndian: false, linkType: 1, resolution: 9)
        file += PcapngFixture.interfaceDescription(bigEndian: false, linkType: 228, resolution: 0x8A)
        file += PcapngFixture.block(type: 4, body: [0, 0, 0, 0], bigEndian: false)
        file += PcapngFixture.enhancedPacket(
            bigEndian: false, interface: 0, units: 1_700_000_000_123_456_789, data: [1, 2, 3, 4, 5],
            originalLength: 60, withComment: true)
        file += PcapngFixture.enhancedPacket(
            bigEndian: false, interface: 1, units: 1_700_000_000 * 1024 + 512, data: patternBytes(count: 20, seed: 7))
        file += PcapngFixture.block(type: 5, body: [UInt8](repeating: 0, count: 12), bigEndian: false)
        file += PcapngFixture.enhancedPacket(bigEndian: false, interface: 1, units: 3, data: [0x45])
        file += PcapngFixture.block(type: 0x4000_0BAD, body: [UInt8](repeating: 0xEE, count: 100_000), bigEndian: false)
        file += PcapngFixture.sectionHeader(bigEndian: true)
        file += PcapngFixture.interfaceDescription(bigEndian: true, linkType: 101, snapshotLength: 8)
        file += PcapngFixture.simplePacket(bigEndian: true, originalLength: 20, data: patternBytes(count: 20, seed: 8))
        file += PcapngFixture.enhancedPacket(
            bigEndian: true, interface: 0, units: 1_500_000, data: [6, 6, 6, 6, 6, 6, 6])
        file += PcapngFixture.interfaceDescription(
            bigEndian: true, linkType: 229, resolution: 3, offsetSeconds: 100)
        file += PcapngFixture.block(type: 0x0A, body: [1, 2, 3, 4, 5, 6, 7, 8], bigEndian: true)
        file += PcapngFixture.enhancedPacket(bigEndian: true, interface: 1, units: 2_500, data: [0x60, 0, 0, 0])
        return file
    }

    @Test func twoSectionsTwoByteOrdersTwoInterfacesEach() throws {
        let file = TemporaryFile(Self.twoSectionFile())
        let reader = try CaptureReader(path: file.path)
        #expect(reader.format == .pcapng)
        var records: [OwnedRecord] = []
        var numbers: [Int] = []
        while let record = try reader.next() {
            records.append(OwnedRecord(record))
            numbers.append(record.number)
        }
        #expect(numbers == [1, 2, 3, 4, 5, 6])
        #expect(reader.interfaces.map(\.rawLinkType) == [101, 229], "the second section replaced the first's")

        let expected = [
            // 10^-9 units are nanoseconds already; the 5-byte packet was padded to 8 in the file.
            OwnedRecord(
                bytes: [1, 2, 3, 4, 5], timestampNanoseconds: 1_700_000_000_123_456_789, originalLength: 60,
                linkType: .ethernet, interfaceIndex: 0),
            // 2^-10 units: 512/1024 s is exactly half a second.
            OwnedRecord(
                bytes: patternBytes(count: 20, seed: 7), timestampNanoseconds: 1_700_000_000_500_000_000,
                originalLength: 20, linkType: .rawIPv4, interfaceIndex: 1),
            // 3/1024 s = 2929687.5 ns, truncated.
            OwnedRecord(
                bytes: [0x45], timestampNanoseconds: 2_929_687, originalLength: 1, linkType: .rawIPv4,
                interfaceIndex: 1),
            // Simple Packet: cut to interface 0's snapshot length; it has no timestamp.
            OwnedRecord(
                bytes: Array(patternBytes(count: 20, seed: 8).prefix(8)), timestampNanoseconds: 0,
                originalLength: 20, linkType: .rawIP, interfaceIndex: 0),
            // No if_tsresol: microseconds.
            OwnedRecord(
                bytes: [6, 6, 6, 6, 6, 6, 6], timestampNanoseconds: 1_500_000_000, originalLength: 7,
                linkType: .rawIP, interfaceIndex: 0),
            // Milliseconds plus if_tsoffset of 100 s.
            OwnedRecord(
                bytes: [0x60, 0, 0, 0], timestampNanoseconds: 102_500_000_000, originalLength: 4,
                linkType: .rawIPv6, interfaceIndex: 1),
        ]
        #expect(records.count == expected.count)
        for (index, (got, want)) in zip(records, expected).enumerated() {
            #expect(got == want, "record \(index + 1)")
        }
    }

    @Test(
        arguments: [
            (0, 7, 7_000_000_000),
            (6, 1_234_567, 1_234_567_000),
            (9, 1_234_567, 1_234_567),
            (12, 1_234_567, 1_234),
            (0x80, 3, 3_000_000_000),
            (0x8A, 1024 * 5 + 256, 5_250_000_000),
            (0x9E, 1 << 30, 1_000_000_000),
            (100, UInt64.max, 0),
        ] as [(UInt8, UInt64, UInt64)])
    func timestampResolutionsConvertExactly(resolution: UInt8, units: UInt64, nanoseconds: UInt64) {
        #expect(TimestampScale(resolution: resolution).nanoseconds(fromUnits: units) == nanoseconds)
    }

    @Test func timestampBeyond2554IsAnErrorNotAWrap() {
        var file: [UInt8] = []
        file += PcapngFixture.sectionHeader(bigEndian: false)
        file += PcapngFixture.interfaceDescription(bigEndian: false, linkType: 1, resolution: 0)
        let offset = file.count
        // 2 × 10^10 seconds is 2 × 10^19 ns, past UInt64.max.
        file += PcapngFixture.enhancedPacket(bigEndian: false, interface: 0, units: 20_000_000_000, data: [1])
        let error = readCapture(bytes: file).failure
        guard case .timestampOutOfRange(_, 1, offset) = error else {
            Issue.record("expected timestampOutOfRange for record 1, got \(String(describing: error))")
            return
        }
    }

    @Test func packetFromAnInterfaceWithAnUnsupportedLinkTypeIsReported() {
        var file: [UInt8] = []
        file += PcapngFixture.sectionHeader(bigEndian: false)
        file += PcapngFixture.interfaceDescription(bigEndian: false, linkType: 1)
        file += PcapngFixture.interfaceDescription(bigEndian: false, linkType: 276)
        file += PcapngFixture.enhancedPacket(bigEndian: false, interface: 0, units: 1, data: [1])
        file += PcapngFixture.enhancedPacket(bigEndian: false, interface: 1, units: 1, data: [1])
        let error = readCapture(bytes: file).failure
        guard case .unsupportedLinkType(_, 276, 1) = error else {
            Issue.record("expected unsupportedLinkType 276 on interface 1, got \(String(describing: error))")
            return
        }
    }
}
