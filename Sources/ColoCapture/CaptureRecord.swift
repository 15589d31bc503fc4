public import ColoPacket

/// The container a capture file uses; pcap fixes one timestamp resolution for the whole file.
public enum CaptureFormat: Equatable, Sendable, CustomStringConvertible {
    case pcap(PcapTimestampResolution)
    case pcapng

    public var description: String {
        switch self {
        case .pcap(.microseconds): "pcap"
        case .pcap(.nanoseconds): "pcap (nanosecond)"
        case .pcapng: "pcapng"
        }
    }
}

/// The two timestamp resolutions classic pcap can declare, chosen by the magic number.
public enum PcapTimestampResolution: Equatable, Sendable {
    case microseconds
    case nanoseconds
}

/// One packet as the reader saw it; `bytes` points into the reader's buffer and is valid only until the next call
/// to `CaptureReader.next()` (or until the reader is released). Copy with `OwnedRecord` to keep it longer.
public struct CaptureRecord {
    /// The captured bytes, possibly fewer than `originalLength` when the capture used a snapshot length.
    public let bytes: UnsafeRawBufferPointer
    /// Nanoseconds since 1970-01-01 UTC; 0 for pcapng Simple Packet blocks, which carry no timestamp.
    public let timestampNanoseconds: UInt64
    /// The packet's length on the wire.
    public let originalLength: Int
    public let linkType: LinkType
    /// Index of the interface within its pcapng section; always 0 for pcap.
    public let interfaceIndex: Int
    /// Position among the file's packet records, counting from 1 as Wireshark's frame numbers do.
    public let number: Int
    /// Byte offset of the record (pcap) or block (pcapng) in the file, for error messages that point somewhere.
    public let fileOffset: Int
}

/// A `CaptureRecord` with its own copy of the bytes, for tests and tools that keep records around (allocates).
public struct OwnedRecord: Equatable, Sendable {
    public var bytes: [UInt8]
    public var timestampNanoseconds: UInt64
    public var originalLength: Int
    public var linkType: LinkType
    public var interfaceIndex: Int

    public init(
        bytes: [UInt8], timestampNanoseconds: UInt64, originalLength: Int, linkType: LinkType, interfaceIndex: Int
    ) {
        self.bytes = bytes
        self.timestampNanoseconds = timestampNanoseconds
        self.originalLength = originalLength
        self.linkType = linkType
        self.interfaceIndex = interfaceIndex
    }

    public init(_ record: CaptureRecord) {
        self.init(
            bytes: Array(record.bytes), timestampNanoseconds: record.timestampNanoseconds,
            originalLength: record.originalLength, linkType: record.linkType, interfaceIndex: record.interfaceIndex)
    }
}

/// A capture interface: a pcap file has exactly one, a pcapng section declares its own with Interface Description
/// blocks. Packets refer to it for their link type and timestamp units.
public struct CaptureInterface: Equatable, Sendable {
    /// The LINKTYPE value stored in the file, kept so an unsupported one can be reported by number.
    public let rawLinkType: UInt32
    /// nil when colo-proxy cannot parse this link type; reading a packet from such an interface throws.
    public let linkType: LinkType?
    /// 0 means unlimited (pcapng allows it).
    public let snapshotLength: UInt32
    let timestampScale: TimestampScale
    /// pcapng's if_tsoffset: seconds to add to every timestamp of the interface.
    let timestampOffsetSeconds: Int64

    init(rawLinkType: UInt32, snapshotLength: UInt32, timestampScale: TimestampScale, timestampOffsetSeconds: Int64) {
        self.rawLinkType = rawLinkType
        self.linkType = Self.linkType(forCaptureValue: rawLinkType)
        self.snapshotLength = snapshotLength
        self.timestampScale = timestampScale
        self.timestampOffsetSeconds = timestampOffsetSeconds
    }

    /// Converts a timestamp in the interface's units to nanoseconds since the epoch; nil when it falls outside
    /// what a UInt64 of nanoseconds can hold (before 1970 or after 2554).
    @inline(__always)
    func nanoseconds(fromUnits units: UInt64) -> UInt64? {
        guard let scaled = timestampScale.nanoseconds(fromUnits: units) else { return nil }
        if timestampOffsetSeconds == 0 { return scaled }
        let shifted = Int128(scaled) + Int128(timestampOffsetSeconds) * 1_000_000_000
        guard shifted >= 0, shifted <= Int128(UInt64.max) else { return nil }
        return UInt64(shifted)
    }

    /// Besides the LINKTYPE values, 12 and 14 are accepted as raw IP: they are the DLT_RAW numbers of different
    /// platforms, and some old writers stored the DLT instead of the LINKTYPE.
    static func linkType(forCaptureValue value: UInt32) -> LinkType? {
        switch value {
        case 1: .ethernet
        case 101, 12, 14: .rawIP
        case 228: .rawIPv4
        case 229: .rawIPv6
        default: nil
        }
    }
}

/// The unit of a pcapng interface's timestamps, from if_tsresol: 10^-n seconds, or 2^-n when the high bit is set.
struct TimestampScale: Equatable, Sendable {
    private enum Conversion: Equatable, Sendable {
        case multiply(UInt64)
        case divide(UInt64)
        case binaryShift(Int)
        /// Units finer than 10^-28 s: every 64-bit count is under a nanosecond.
        case alwaysZero
    }

    private let conversion: Conversion

    static let microseconds = TimestampScale(resolution: 6)

    /// Every byte value is meaningful, so this cannot fail.
    init(resolution: UInt8) {
        let exponent = Int(resolution & 0x7F)
        if resolution & 0x80 != 0 {
            conversion = .binaryShift(exponent)
        } else if exponent <= 9 {
            conversion = .multiply(Self.powerOfTen(9 - exponent))
        } else if exponent <= 28 {
            conversion = .divide(Self.powerOfTen(exponent - 9))
        } else {
            conversion = .alwaysZero
        }
    }

    /// Truncates toward zero when the unit does not divide a nanosecond evenly (e.g. 2^-10 s).
    @inline(__always)
    func nanoseconds(fromUnits units: UInt64) -> UInt64? {
        switch conversion {
        case .multiply(let factor):
            let (product, overflow) = units.multipliedReportingOverflow(by: factor)
            return overflow ? nil : product
        case .divide(let divisor):
            return units / divisor
        case .binaryShift(let shift):
            // 128 bits hold units × 10^9 exactly, so the shift loses nothing it should keep.
            let result = (UInt128(units) * 1_000_000_000) >> shift
            return result > UInt128(UInt64.max) ? nil : UInt64(result)
        case .alwaysZero:
            return 0
        }
    }

    private static func powerOfTen(_ exponent: Int) -> UInt64 {
        var value: UInt64 = 1
        for _ in 0..<exponent { value &*= 10 }
        return value
    }
}
