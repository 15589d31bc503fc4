import ColoPacket

/// Which datagram a fragment belongs to (RFC 791 / RFC 8200), plus the caller's zone so that two replicas'
/// identical fragments never meet. IPv4 addresses sit in the low words.
struct FragmentKey: Hashable {
    var sourceHigh: UInt64
    var sourceLow: UInt64
    var destinationHigh: UInt64
    var destinationLow: UInt64
    var identification: UInt32
    var zone: UInt16
    var isIPv6: Bool
    var proto: UInt8
}

/// The reassembly-relevant facts of one fragment, checked against its buffer once so that later copies
/// cannot go out of bounds whatever layout the caller passed.
struct FragmentView {
    var key: FragmentKey
    /// Offset of this fragment's data in the datagram, and where the data ends.
    var offset: Int
    var end: Int
    var more: Bool
    /// Where the data starts in the submitted buffer.
    var dataStart: Int
    var networkOffset: Int
    /// Bytes this fragment would contribute as the reassembled header: IPv4 header, or IPv6 header plus the
    /// extension headers before the fragment header.
    var headerLength: Int
    /// IPv6: the byte of the header chain that names the fragment header (relative to the IP header), which
    /// must name the fragment's next header once the fragment header is gone. Only set for first fragments.
    var nextHeaderField: Int
    /// IP datagram size of the fragment, header included (for the MRU).
    var size: Int

    var dataLength: Int { end - offset }
    var isFirst: Bool { offset == 0 }
    /// The part of `headerLength` that counts against the size limit (IPv6 limits the payload length only).
    var limitedHeaderLength: Int { key.isIPv6 ? headerLength - 40 : headerLength }

    /// Nil when the layout does not describe a well-formed fragment inside `bytes`.
    init?(_ bytes: UnsafeRawBufferPointer, layout: PacketLayout, zone: UInt16) {
        let start = layout.networkOffset
        let end = layout.networkEnd
        guard start >= 0, start <= end, end <= bytes.count else { return nil }
        networkOffset = start
        size = end - start
        offset = layout.fragmentOffset
        more = layout.moreFragments
        nextHeaderField = 0
        guard offset >= 0 else { return nil }
        switch layout.network {
        case .ipv4:
            guard layout.ipHeaderLength >= 20, start + layout.ipHeaderLength <= end else { return nil }
            headerLength = layout.ipHeaderLength
            dataStart = start + headerLength
            let source = IPv4Address(bytes, at: start + 12)
            let destination = IPv4Address(bytes, at: start + 16)
            key = FragmentKey(
                sourceHigh: 0, sourceLow: UInt64(source.value), destinationHigh: 0,
                destinationLow: UInt64(destination.value), identification: layout.fragmentID, zone: zone,
                isIPv6: false, proto: bytes[start + 9])
        case .ipv6:
            let fragmentHeader = layout.fragmentHeaderOffset
            guard fragmentHeader >= start + 40, fragmentHeader + 8 <= end else { return nil }
            headerLength = fragmentHeader - start
            dataStart = fragmentHeader + 8
            let source = IPv6Address(bytes, at: start + 8)
            let destination = IPv6Address(bytes, at: start + 24)
            key = FragmentKey(
                sourceHigh: source.high, sourceLow: source.low, destinationHigh: destination.high,
                destinationLow: destination.low, identification: layout.fragmentID, zone: zone, isIPv6: true,
                proto: bytes[fragmentHeader])
            if offset == 0 {
                guard let field = Self.fieldNamingFragmentHeader(bytes, from: start, to: fragmentHeader) else {
                    return nil
                }
                nextHeaderField = field - start
            }
        default:
            return nil
        }
        self.end = offset + (end - dataStart)
    }

    /// Walks the extension headers before the fragment header and returns the offset of the next-header byte
    /// that points at it. The parser walked the same chain, but it keeps only where the chain ends.
    static func fieldNamingFragmentHeader(_ bytes: UnsafeRawBufferPointer, from start: Int, to fragmentHeader: Int)
        -> Int?
    {
        var field = start + 6
        var next = bytes[field]
        var cursor = start + 40
        while cursor < fragmentHeader {
            guard cursor + 2 <= fragmentHeader else { return nil }
            let length =
                next == IPProtocol.ah ? (Int(bytes[cursor + 1]) + 2) * 4 : (Int(bytes[cursor + 1]) + 1) * 8
            field = cursor
            next = bytes[cursor]
            cursor += length
        }
        guard cursor == fragmentHeader, next == IPProtocol.ipv6Fragment else { return nil }
        return field
    }
}

/// One fragment's place in its datagram, as a half-open byte range.
struct FragmentSpan {
    var start: Int32
    var end: Int32
}

/// One datagram in reassembly, or an idle entry of the pool keeping its buffers for the next datagram.
///
/// The data of fragment offset `o` lives at `buffer + dataStart + o`; the first fragment's header is copied
/// just before `dataStart`, so the finished datagram is one contiguous run needing no further copy.
struct ReassemblySlot {
    var buffer: UnsafeMutableRawPointer?
    var capacity: Int = 0
    /// `maxFragmentsPerDatagram + 1` entries: the extra one takes the token of the fragment that breaks the
    /// datagram, so a drop hands back every token in one list.
    var tokens: UnsafeMutablePointer<UInt64>
    var spans: UnsafeMutablePointer<FragmentSpan>
    var fragmentCount: Int = 0
    var key: FragmentKey
    var created: UInt64 = 0
    var dataStart: Int = 0
    /// 0 until the first fragment (offset 0) arrives.
    var headerLength: Int = 0
    var nextHeaderField: Int = 0
    /// -1 until the last fragment fixes it.
    var totalEnd: Int = -1
    var maxEnd: Int = 0
    var dataBytes: Int = 0
    var mru: Int = 0
    /// Neighbours in creation order, for expiry without a scan; -1 at the ends.
    var older: Int32 = -1
    var newer: Int32 = -1

    var isComplete: Bool { totalEnd >= 0 && headerLength > 0 && dataBytes == totalEnd }
}
