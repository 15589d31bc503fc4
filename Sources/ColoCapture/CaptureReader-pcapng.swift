import ColoPacket

extension CaptureReader {
    private static let blockHeaderLength = 8
    private static let sectionHeaderMinimumLength = 28
    private static let interfaceDescriptionMinimumLength = 20
    private static let enhancedPacketMinimumLength = 32
    private static let simplePacketMinimumLength = 16
    private static let optionTimestampResolution: UInt16 = 9
    private static let optionTimestampOffset: UInt16 = 14

    private var blockLengthLimit: Int { maximumRecordLength + Self.blockOptionsAllowance }

    func nextPcapngRecord() throws(CaptureError) -> CaptureRecord? {
        while true {
            let blockOffset = headFileOffset
            let available = try fill(Self.blockHeaderLength)
            if available == 0 { return nil }
            let blockType = available >= 4 ? loadUInt32(at: 0) : 0
            if available < Self.blockHeaderLength {
                throw .truncatedBlock(
                    path: path, offset: blockOffset, blockType: blockType, expected: Self.blockHeaderLength,
                    present: available)
            }
            switch blockType {
            case PcapngBlockType.enhancedPacket: return try readEnhancedPacketBlock()
            case PcapngBlockType.simplePacket: return try readSimplePacketBlock()
            case PcapngBlockType.interfaceDescription: try readInterfaceDescriptionBlock()
            case PcapngBlockType.sectionHeader: try readSectionHeaderBlock()
            default: try skipBlock(type: blockType)
            }
        }
    }

    /// Starts a section: its byte-order magic decides how every later block is read, and it drops the previous
    /// section's interfaces, which later packets may no longer name.
    func readSectionHeaderBlock() throws(CaptureError) {
        let blockOffset = headFileOffset
        let blockType = PcapngBlockType.sectionHeader
        let minimum = Self.sectionHeaderMinimumLength
        let available = try fill(minimum)
        if available < 12 {
            throw .truncatedBlock(
                path: path, offset: blockOffset, blockType: blockType, expected: minimum, present: available)
        }
        switch storage.loadUnaligned(fromByteOffset: head + 8, as: UInt32.self) {
        case 0x1A2B_3C4D: byteSwapped = false
        case 0x4D3C_2B1A: byteSwapped = true
        case let other:
            throw .malformedBlock(
                path: path, offset: blockOffset, blockType: blockType,
                detail: "byte-order magic is \(CaptureError.spacedHex(UInt32(bigEndian: other))), "
                    + "expected 1a 2b 3c 4d in either order")
        }
        let length = try checkedBlockLength(type: blockType, offset: blockOffset, minimum: minimum)
        if available < minimum {
            throw .truncatedBlock(
                path: path, offset: blockOffset, blockType: blockType, expected: length, present: available)
        }
        let major = loadUInt16(at: 12)
        let minor = loadUInt16(at: 14)
        if major != 1 {
            throw .unsupportedVersion(path: path, format: .pcapng, offset: blockOffset, major: major, minor: minor)
        }
        interfaces.removeAll(keepingCapacity: true)
        // The section length and options say nothing we need, so they are streamed past rather than buffered.
        consume(16)
        try skipToTrailer(type: blockType, offset: blockOffset, length: length, consumed: 16)
    }

    private func readInterfaceDescriptionBlock() throws(CaptureError) {
        let blockOffset = headFileOffset
        let blockType = PcapngBlockType.interfaceDescription
        let length = try checkedBlockLength(
            type: blockType, offset: blockOffset, minimum: Self.interfaceDescriptionMinimumLength)
        try bufferWholeBlock(type: blockType, offset: blockOffset, length: length)
        if interfaces.count >= Self.maximumInterfacesPerSection {
            throw .tooManyInterfaces(path: path, offset: blockOffset, limit: Self.maximumInterfacesPerSection)
        }
        let rawLinkType = UInt32(loadUInt16(at: 8))
        let snapshotLength = loadUInt32(at: 12)
        var scale = TimestampScale.microseconds
        var offsetSeconds: Int64 = 0
        var position = 16
        let optionsEnd = length - 4
        while position + 4 <= optionsEnd {
            let code = loadUInt16(at: position)
            let valueLength = Int(loadUInt16(at: position + 2))
            if code == 0 { break }
            let valueStart = position + 4
            if valueStart + valueLength > optionsEnd {
                throw .malformedBlock(
                    path: path, offset: blockOffset, blockType: blockType,
                    detail: "option \(code) at block byte \(position) has length \(valueLength), "
                        + "past the end of the block")
            }
            switch code {
            case Self.optionTimestampResolution:
                guard valueLength == 1 else {
                    throw .malformedBlock(
                        path: path, offset: blockOffset, blockType: blockType,
                        detail: "if_tsresol has length \(valueLength), expected 1")
                }
                scale = TimestampScale(resolution: storage.load(fromByteOffset: head + valueStart, as: UInt8.self))
            case Self.optionTimestampOffset:
                guard valueLength == 8 else {
                    throw .malformedBlock(
                        path: path, offset: blockOffset, blockType: blockType,
                        detail: "if_tsoffset has length \(valueLength), expected 8")
                }
                offsetSeconds = Int64(bitPattern: loadUInt64(at: valueStart))
            default:
                break
            }
            position = valueStart + ((valueLength + 3) & ~3)
        }
        interfaces.append(
            CaptureInterface(
                rawLinkType: rawLinkType, snapshotLength: snapshotLength, timestampScale: scale,
                timestampOffsetSeconds: offsetSeconds))
        consume(length)
    }

    private func readEnhancedPacketBlock() throws(CaptureError) -> CaptureRecord {
        let blockOffset = headFileOffset
        let blockType = PcapngBlockType.enhancedPacket
        let recordNumber = recordsRead + 1
        let length = try checkedBlockLength(
            type: blockType, offset: blockOffset, minimum: Self.enhancedPacketMinimumLength)
        try bufferWholeBlock(type: blockType, offset: blockOffset, length: length)
        let interfaceID = loadUInt32(at: 8)
        let (interface, linkType) = try interfaceForPacket(interfaceID, record: recordNumber, offset: blockOffset)
        let capturedLength = Int(loadUInt32(at: 20))
        if capturedLength > maximumRecordLength {
            throw .recordTooLarge(
                path: path, record: recordNumber, offset: blockOffset, length: capturedLength,
                limit: maximumRecordLength)
        }
        let room = length - Self.enhancedPacketMinimumLength
        if capturedLength > room {
            throw .malformedBlock(
                path: path, offset: blockOffset, blockType: blockType,
                detail: "captured length \(capturedLength) exceeds the \(room) bytes of packet data in the block")
        }
        let units = UInt64(loadUInt32(at: 12)) << 32 | UInt64(loadUInt32(at: 16))
        guard let nanoseconds = interface.nanoseconds(fromUnits: units) else {
            throw .timestampOutOfRange(path: path, record: recordNumber, offset: blockOffset)
        }
        recordsRead = recordNumber
        let record = CaptureRecord(
            bytes: bytes(at: 28, count: capturedLength), timestampNanoseconds: nanoseconds,
            originalLength: Int(loadUInt32(at: 24)), linkType: linkType, interfaceIndex: Int(interfaceID),
            number: recordNumber, fileOffset: blockOffset)
        consume(length)
        return record
    }

    /// A Simple Packet block has no captured length of its own: it is the original length cut to interface 0's
    /// snapshot length and to the block's room, whichever is least.
    private func readSimplePacketBlock() throws(CaptureError) -> CaptureRecord {
        let blockOffset = headFileOffset
        let blockType = PcapngBlockType.simplePacket
        let recordNumber = recordsRead + 1
        let length = try checkedBlockLength(
            type: blockType, offset: blockOffset, minimum: Self.simplePacketMinimumLength)
        try bufferWholeBlock(type: blockType, offset: blockOffset, length: length)
        let (interface, linkType) = try interfaceForPacket(0, record: recordNumber, offset: blockOffset)
        let originalLength = Int(loadUInt32(at: 8))
        var capturedLength = min(originalLength, length - Self.simplePacketMinimumLength)
        if interface.snapshotLength != 0 {
            capturedLength = min(capturedLength, Int(interface.snapshotLength))
        }
        if capturedLength > maximumRecordLength {
            throw .recordTooLarge(
                path: path, record: recordNumber, offset: blockOffset, length: capturedLength,
                limit: maximumRecordLength)
        }
        recordsRead = recordNumber
        let record = CaptureRecord(
            bytes: bytes(at: 12, count: capturedLength), timestampNanoseconds: 0, originalLength: originalLength,
            linkType: linkType, interfaceIndex: 0, number: recordNumber, fileOffset: blockOffset)
        consume(length)
        return record
    }

    private func interfaceForPacket(
        _ interfaceID: UInt32, record: Int, offset: Int
    ) throws(CaptureError) -> (CaptureInterface, LinkType) {
        guard interfaceID < UInt32(interfaces.count) else {
            throw .unknownInterface(
                path: path, record: record, offset: offset, interface: interfaceID, known: interfaces.count)
        }
        let interface = interfaces[Int(interfaceID)]
        guard let linkType = interface.linkType else {
            throw .unsupportedLinkType(path: path, linkType: interface.rawLinkType, interface: Int(interfaceID))
        }
        return (interface, linkType)
    }

    /// Unknown blocks (name resolution, statistics, secrets, custom) are streamed past, never buffered, so their
    /// size costs no memory; the trailer is still checked to catch a corrupt length before it derails us.
    private func skipBlock(type: UInt32) throws(CaptureError) {
        let blockOffset = headFileOffset
        let length = try checkedBlockLength(type: type, offset: blockOffset, minimum: 12)
        consume(Self.blockHeaderLength)
        try skipToTrailer(type: type, offset: blockOffset, length: length, consumed: Self.blockHeaderLength)
    }

    /// Reads the total length at block byte 4 (the block header must be buffered) and rejects impossible values.
    private func checkedBlockLength(type: UInt32, offset: Int, minimum: Int) throws(CaptureError) -> Int {
        let length = Int(loadUInt32(at: 4))
        if length < minimum {
            throw .badBlockLength(
                path: path, offset: offset, blockType: type, length: length, problem: .shorterThanMinimum(minimum))
        }
        if length % 4 != 0 {
            throw .badBlockLength(
                path: path, offset: offset, blockType: type, length: length, problem: .notMultipleOfFour)
        }
        return length
    }

    private func bufferWholeBlock(type: UInt32, offset: Int, length: Int) throws(CaptureError) {
        if length > blockLengthLimit {
            throw .badBlockLength(
                path: path, offset: offset, blockType: type, length: length,
                problem: .largerThanLimit(blockLengthLimit))
        }
        let available = try fill(length)
        if available < length {
            throw .truncatedBlock(path: path, offset: offset, blockType: type, expected: length, present: available)
        }
        let trailer = loadUInt32(at: length - 4)
        if trailer != UInt32(length) {
            throw .badBlockLength(
                path: path, offset: offset, blockType: type, length: length,
                problem: .trailerMismatch(trailer: trailer))
        }
    }

    /// Drops the rest of a block whose first `consumed` bytes are already consumed, then checks its trailer.
    private func skipToTrailer(type: UInt32, offset: Int, length: Int, consumed: Int) throws(CaptureError) {
        let bodyRemaining = length - 4 - consumed
        let skipped = try discard(bodyRemaining)
        if skipped < bodyRemaining {
            throw .truncatedBlock(
                path: path, offset: offset, blockType: type, expected: length, present: consumed + skipped)
        }
        let available = try fill(4)
        if available < 4 {
            throw .truncatedBlock(
                path: path, offset: offset, blockType: type, expected: length, present: length - 4 + available)
        }
        let trailer = loadUInt32(at: 0)
        if trailer != UInt32(length) {
            throw .badBlockLength(
                path: path, offset: offset, blockType: type, length: length,
                problem: .trailerMismatch(trailer: trailer))
        }
        consume(4)
    }
}
