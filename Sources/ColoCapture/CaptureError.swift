/// Why a capture file could not be opened, read or written; `description` is one line naming the file and the place.
///
/// Reading stops at the first error: a corrupt length makes everything after it meaningless, so the reader
/// rethrows the same error on later calls instead of guessing where the next record starts.
public enum CaptureError: Error, CustomStringConvertible, Equatable, Sendable {
    case cannotOpen(path: String, errno: Int32)
    case readFailed(path: String, offset: Int, errno: Int32)
    case writeFailed(path: String, errno: Int32)
    case closeFailed(path: String, errno: Int32)
    case emptyFile(path: String)
    /// `magic` is the first four bytes in file order (0xdeadbeef for de ad be ef).
    case unknownMagic(path: String, magic: UInt32)
    /// `format` is nil when the file was too short to tell.
    case truncatedFileHeader(path: String, format: CaptureFormat?, expected: Int, present: Int)
    case unsupportedVersion(path: String, format: CaptureFormat, offset: Int, major: UInt16, minor: UInt16)
    case unsupportedLinkType(path: String, linkType: UInt32, interface: Int)
    /// A pcap record whose 16-byte header itself is cut short. `record` counts from 1.
    case truncatedRecordHeader(path: String, record: Int, offset: Int, expected: Int, present: Int)
    /// A record whose header is complete but whose packet bytes are cut short.
    case truncatedRecord(path: String, record: Int, offset: Int, expected: Int, present: Int)
    case recordTooLarge(path: String, record: Int, offset: Int, length: Int, limit: Int)
    case badBlockLength(path: String, offset: Int, blockType: UInt32, length: Int, problem: BlockLengthProblem)
    case truncatedBlock(path: String, offset: Int, blockType: UInt32, expected: Int, present: Int)
    case malformedBlock(path: String, offset: Int, blockType: UInt32, detail: String)
    case tooManyInterfaces(path: String, offset: Int, limit: Int)
    case unknownInterface(path: String, record: Int, offset: Int, interface: UInt32, known: Int)
    case timestampOutOfRange(path: String, record: Int, offset: Int)
    /// pcap stores whole seconds in 32 bits, so instants after 2106 cannot be written.
    case timestampNotRepresentable(path: String, nanoseconds: UInt64)
    case writerClosed(path: String)

    /// What is wrong with a pcapng block's total length field.
    public enum BlockLengthProblem: Equatable, Sendable {
        case notMultipleOfFour
        case shorterThanMinimum(Int)
        case largerThanLimit(Int)
        /// The copy of the length after the body differs; `trailer` is that copy.
        case trailerMismatch(trailer: UInt32)
    }

    public var description: String {
        switch self {
        case .cannotOpen(let path, let code):
            return "\(path): cannot open: \(SystemCall.describe(errno: code))"
        case .readFailed(let path, let offset, let code):
            return "\(path): read failed at byte \(offset): \(SystemCall.describe(errno: code))"
        case .writeFailed(let path, let code):
            return "\(path): write failed: \(SystemCall.describe(errno: code))"
        case .closeFailed(let path, let code):
            return "\(path): close failed: \(SystemCall.describe(errno: code))"
        case .emptyFile(let path):
            return "\(path): empty file, not a capture"
        case .unknownMagic(let path, let magic):
            return "\(path): not a capture file (starts with \(Self.spacedHex(magic)), "
                + "expected a pcap or pcapng magic number)"
        case .truncatedFileHeader(let path, let format, let expected, let present):
            let what = format.map { "\($0) file header" } ?? "capture file header"
            return "\(path): truncated \(what) (\(expected) bytes expected, \(present) present)"
        case .unsupportedVersion(let path, let format, let offset, let major, let minor):
            let expected = format == .pcapng ? "1.x" : "2.x"
            return "\(path): unsupported \(format) version \(major).\(minor) at byte \(offset) (expected \(expected))"
        case .unsupportedLinkType(let path, let linkType, let interface):
            return "\(path): interface \(interface) has unsupported link type \(linkType) "
                + "(supported: 1 Ethernet, 101 raw IP, 228 raw IPv4, 229 raw IPv6)"
        case .truncatedRecordHeader(let path, let record, let offset, let expected, let present):
            return "\(path): record \(record) at byte \(offset) is truncated "
                + "(\(expected)-byte record header, \(present) bytes present)"
        case .truncatedRecord(let path, let record, let offset, let expected, let present):
            return "\(path): record \(record) at byte \(offset) is truncated "
                + "(header says \(expected) bytes, \(present) present)"
        case .recordTooLarge(let path, let record, let offset, let length, let limit):
            return "\(path): record \(record) at byte \(offset) claims \(length) bytes, more than the limit of \(limit)"
        case .badBlockLength(let path, let offset, let blockType, let length, let problem):
            let block = "\(Self.blockName(blockType)) block at byte \(offset)"
            switch problem {
            case .notMultipleOfFour:
                return "\(path): \(block) has length \(length), not a multiple of 4"
            case .shorterThanMinimum(let minimum):
                return "\(path): \(block) has length \(length), less than the minimum of \(minimum)"
            case .largerThanLimit(let limit):
                return "\(path): \(block) has length \(length), more than the limit of \(limit)"
            case .trailerMismatch(let trailer):
                return "\(path): \(block) has length \(length) but its trailing length field says \(trailer)"
            }
        case .truncatedBlock(let path, let offset, let blockType, let expected, let present):
            return "\(path): \(Self.blockName(blockType)) block at byte \(offset) is truncated "
                + "(block needs \(expected) bytes, \(present) present)"
        case .malformedBlock(let path, let offset, let blockType, let detail):
            return "\(path): \(Self.blockName(blockType)) block at byte \(offset): \(detail)"
        case .tooManyInterfaces(let path, let offset, let limit):
            return "\(path): Interface Description block at byte \(offset) exceeds the limit of \(limit) "
                + "interfaces per section"
        case .unknownInterface(let path, let record, let offset, let interface, let known):
            return "\(path): record \(record) at byte \(offset) names interface \(interface), "
                + "but the section declares \(known)"
        case .timestampOutOfRange(let path, let record, let offset):
            return "\(path): record \(record) at byte \(offset) has a timestamp outside 1970...2554"
        case .timestampNotRepresentable(let path, let nanoseconds):
            return "\(path): timestamp \(nanoseconds) ns does not fit pcap's 32-bit seconds field"
        case .writerClosed(let path):
            return "\(path): write after close"
        }
    }

    static func blockName(_ type: UInt32) -> String {
        switch type {
        case PcapngBlockType.sectionHeader: return "Section Header"
        case PcapngBlockType.interfaceDescription: return "Interface Description"
        case PcapngBlockType.simplePacket: return "Simple Packet"
        case PcapngBlockType.nameResolution: return "Name Resolution"
        case PcapngBlockType.interfaceStatistics: return "Interface Statistics"
        case PcapngBlockType.enhancedPacket: return "Enhanced Packet"
        case PcapngBlockType.decryptionSecrets: return "Decryption Secrets"
        default: return "pcapng type 0x\(hex(type))"
        }
    }

    static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 8 - digits.count) + digits
    }

    static func spacedHex(_ value: UInt32) -> String {
        let digits = hex(value)
        var result = ""
        for (index, character) in digits.enumerated() {
            if index > 0 && index % 2 == 0 { result.append(" ") }
            result.append(character)
        }
        return result
    }
}

/// pcapng block type codes (the values are the same in both byte orders only for the Section Header).
enum PcapngBlockType {
    static let sectionHeader: UInt32 = 0x0A0D_0D0A
    static let interfaceDescription: UInt32 = 0x0000_0001
    static let simplePacket: UInt32 = 0x0000_0003
    static let nameResolution: UInt32 = 0x0000_0004
    static let interfaceStatistics: UInt32 = 0x0000_0005
    static let enhancedPacket: UInt32 = 0x0000_0006
    static let decryptionSecrets: UInt32 = 0x0000_000A
}
