import ColoPacket

/// Why a datagram in reassembly was given up. Every fragment of it held so far comes back with the reason.
public enum FragmentDropReason: Sendable, Equatable {
    /// A non-last fragment carried less data than `Configuration.minimumFragmentSize`.
    case tooSmall
    /// Two fragments cover the same bytes (exact duplicates included), or two "last" fragments disagree, or a
    /// fragment lies beyond the end the last fragment fixed.
    case overlap
    /// The reassembled datagram would exceed `Configuration.maxReassembledSize`.
    case oversize
    /// More than `Configuration.maxFragmentsPerDatagram` fragments.
    case tooManyFragments
    /// A non-last fragment whose data is not a multiple of 8 bytes, a header chain that does not lead to the
    /// fragment header, a layout that does not fit its buffer, or a reassembled datagram that does not parse.
    case malformed
    /// `Configuration.maxDatagrams` datagrams are already in reassembly; the new datagram is refused.
    case tableFull
    /// Reassembly buffers would exceed `Configuration.maxBufferBytes`.
    case memoryFull
    /// A fragment arrived for a datagram older than `Configuration.timeout` that `expire(now:)` had not yet
    /// collected; the late fragment goes with it.
    case timedOut
}

/// The tokens of the original fragments of one datagram, in arrival order.
///
/// A view into the reassembler's storage: valid only until the next call into the same `FragmentReassembler`.
/// Copy it (`Array(tokens)`) to keep it longer.
public struct FragmentTokens: RandomAccessCollection {
    @usableFromInline let base: UnsafePointer<UInt64>
    public let count: Int
    /// The zone the fragments were submitted in (so expired fragments can be reported against it).
    public let zone: UInt16

    @inlinable init(base: UnsafePointer<UInt64>, count: Int, zone: UInt16) {
        self.base = base
        self.count = count
        self.zone = zone
    }

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { count }

    @inlinable public subscript(position: Int) -> UInt64 {
        precondition(position >= 0 && position < count, "fragment token index \(position) out of 0..<\(count)")
        return base[position]
    }
}

/// A datagram put back together from its fragments.
///
/// `bytes` and `tokens` point into the reassembler's buffers: valid only until the next call into the same
/// `FragmentReassembler`. The caller that needs the datagram longer copies it.
public struct ReassembledDatagram {
    /// The whole IP datagram (no link header): IPv4 with total length, flags and checksum fixed; IPv6 with the
    /// fragment header removed and the payload length fixed.
    public let bytes: UnsafeRawBufferPointer
    /// `bytes` parsed as `.rawIPv4` or `.rawIPv6`.
    public let layout: PacketLayout
    /// The caller's tokens of the original fragments, in arrival order.
    public let tokens: FragmentTokens
    /// Largest original fragment, IP header included: the size to re-fragment to.
    public let mru: Int
    /// The zone the fragments were submitted in.
    public let zone: UInt16
}

/// What `FragmentReassembler.submit` did with a packet.
///
/// Every token submitted comes back exactly once: in `.completed`, in `.dropped`, or through `expire`/`flush`
/// (except for `.notAFragment`, which keeps nothing).
public enum FragmentResult {
    /// The packet is a whole datagram (IPv6 atomic fragments included, RFC 6946): nothing was kept.
    case notAFragment
    /// The fragment was kept; its datagram is not complete yet.
    case held
    /// This fragment completed its datagram.
    case completed(ReassembledDatagram)
    /// The datagram was refused; the tokens are those of all its fragments held so far, this one included.
    case dropped(FragmentDropReason, FragmentTokens)
}

/// What a `FragmentReassembler` has done since it was created. Datagram counters count datagrams, not fragments.
public struct FragmentCounters: Equatable, Sendable {
    /// Fragments taken into reassembly (held or completing a datagram).
    public var accepted: UInt64 = 0
    /// Datagrams reassembled and handed back.
    public var completed: UInt64 = 0
    /// Datagrams not complete within the timeout.
    public var expired: UInt64 = 0
    /// Datagrams dropped for a too-small non-last fragment.
    public var tooSmall: UInt64 = 0
    /// Datagrams dropped for overlapping, duplicate or inconsistent fragments.
    public var overlap: UInt64 = 0
    /// Datagrams dropped because they would exceed the maximum reassembled size.
    public var oversize: UInt64 = 0
    /// Datagrams dropped for having too many fragments.
    public var tooManyFragments: UInt64 = 0
    /// Datagrams dropped as malformed.
    public var malformed: UInt64 = 0
    /// Datagrams refused because the table or the buffer budget was full.
    public var purged: UInt64 = 0
    /// Fragments whose tokens came back in a drop or an expiry.
    public var droppedFragments: UInt64 = 0
    /// Datagrams in reassembly now.
    public var currentDatagrams: UInt64 = 0
    /// Fragment data bytes (after the IP headers) held now.
    public var currentBytes: UInt64 = 0
    /// Memory in reassembly buffers now, idle pooled buffers included; never above `maxBufferBytes`.
    public var bufferBytes: UInt64 = 0

    public init() {}
}

extension FragmentReassembler {
    /// Limits of a reassembler. The defaults are those of CONNTRACK.md §Fragments.
    public struct Configuration: Sendable, Equatable {
        /// Datagrams in reassembly at once; a new datagram beyond this is refused (`.tableFull`).
        public var maxDatagrams: Int = 1000
        /// Data bytes a non-last fragment must carry at least; smaller ones are a known evasion and DoS pattern.
        public var minimumFragmentSize: Int = 400
        /// Nanoseconds from the arrival of a datagram's earliest fragment (whatever its offset) to its expiry.
        public var timeout: UInt64 = 15_000_000_000
        /// Largest IPv4 total length, or IPv6 payload length, a reassembled datagram may have (at most 65535).
        public var maxReassembledSize: Int = 65535
        /// Fragments one datagram may have; the token list has this fixed capacity.
        public var maxFragmentsPerDatagram: Int = 64
        /// Memory for reassembly buffers, idle pooled ones included. 16 MiB holds the full table of 1000
        /// datagrams at 16 KiB each, or 250 of the largest; beyond it new data is refused (`.memoryFull`).
        public var maxBufferBytes: Int = 16 << 20

        public init(
            maxDatagrams: Int = 1000, minimumFragmentSize: Int = 400, timeout: UInt64 = 15_000_000_000,
            maxReassembledSize: Int = 65535, maxFragmentsPerDatagram: Int = 64, maxBufferBytes: Int = 16 << 20
        ) {
            self.maxDatagrams = maxDatagrams
            self.minimumFragmentSize = minimumFragmentSize
            self.timeout = timeout
            self.maxReassembledSize = maxReassembledSize
            self.maxFragmentsPerDatagram = maxFragmentsPerDatagram
            self.maxBufferBytes = maxBufferBytes
        }

        /// The same limits pulled into the ranges the reassembler can honour.
        var clamped: Configuration {
            var c = self
            c.maxDatagrams = min(max(c.maxDatagrams, 1), Int(Int32.max))
            c.minimumFragmentSize = max(c.minimumFragmentSize, 0)
            c.maxReassembledSize = min(max(c.maxReassembledSize, 0), 65535)
            c.maxFragmentsPerDatagram = min(max(c.maxFragmentsPerDatagram, 2), 8192)
            c.maxBufferBytes = max(c.maxBufferBytes, 0)
            return c
        }
    }
}
