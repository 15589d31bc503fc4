import ColoPacket

extension CaptureReader {
    static let pcapGlobalHeaderLength = 24
    static let pcapRecordHeaderLength = 16

    func readPcapHeader(resolution: PcapTimestampResolution, byteSwapped: Bool) throws(CaptureError) {
        let format = CaptureFormat.pcap(resolution)
        self.format = format
        self.byteSwapped = byteSwapped
        let available = try fill(Self.pcapGlobalHeaderLength)
        if available < Self.pcapGlobalHeaderLength {
            throw .truncatedFileHeader(
                path: path, format: format, expected: Self.pcapGlobalHeaderLength, present: available)
        }
        let major = loadUInt16(at: 4)
        let minor = loadUInt16(at: 6)
        if major != 2 {
            throw .unsupportedVersion(path: path, format: format, offset: 0, major: major, minor: minor)
        }
        let snapshotLength = loadUInt32(at: 16)
        // The upper 16 bits carry FCS information, not the link type.
        let rawLinkType = loadUInt32(at: 20) & 0xFFFF
        let interface = CaptureInterface(
            rawLinkType: rawLinkType, snapshotLength: snapshotLength, timestampScale: .microseconds,
            timestampOffsetSeconds: 0)
        guard let linkType = interface.linkType else {
            throw .unsupportedLinkType(path: path, linkType: rawLinkType, interface: 0)
        }
        interfaces = [interface]
        pcapLinkType = linkType
        consume(Self.pcapGlobalHeaderLength)
    }

    func nextPcapRecord(resolution: PcapTimestampResolution) throws(CaptureError) -> CaptureRecord? {
        let recordOffset = headFileOffset
        let headerLength = Self.pcapRecordHeaderLength
        let available = try fill(headerLength)
        if available == 0 { return nil }
        if available < headerLength {
            throw .truncatedRecordHeader(
                path: path, record: recordsRead + 1, offset: recordOffset, expected: headerLength, present: available)
        }
        let capturedLength = Int(loadUInt32(at: 8))
        if capturedLength > maximumRecordLength {
            throw .recordTooLarge(
                path: path, record: recordsRead + 1, offset: recordOffset, length: capturedLength,
                limit: maximumRecordLength)
        }
        let present = try fill(headerLength + capturedLength)
        if present < headerLength + capturedLength {
            throw .truncatedRecord(
                path: path, record: recordsRead + 1, offset: recordOffset, expected: capturedLength,
                present: present - headerLength)
        }
        // 2^32 s × 10^9 plus a 32-bit fraction × 1000 stays below 2^64, so neither resolution can overflow.
        let seconds = UInt64(loadUInt32(at: 0))
        let fraction = UInt64(loadUInt32(at: 4))
        let nanoseconds =
            resolution == .microseconds
            ? seconds * 1_000_000_000 + fraction * 1_000 : seconds * 1_000_000_000 + fraction
        recordsRead += 1
        let record = CaptureRecord(
            bytes: bytes(at: headerLength, count: capturedLength), timestampNanoseconds: nanoseconds,
            originalLength: Int(loadUInt32(at: 12)), linkType: pcapLinkType, interfaceIndex: 0,
            number: recordsRead, fileOffset: recordOffset)
        consume(headerLength + capturedLength)
        return record
    }
}
