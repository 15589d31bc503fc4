/// The connection-tracking state of one packet, with Open vSwitch's bit values (WIRE.md §3).
public struct CTState: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var new: CTState { CTState(rawValue: 0x01) }
    @inlinable public static var established: CTState { CTState(rawValue: 0x02) }
    @inlinable public static var related: CTState { CTState(rawValue: 0x04) }
    @inlinable public static var reply: CTState { CTState(rawValue: 0x08) }
    @inlinable public static var invalid: CTState { CTState(rawValue: 0x10) }
    @inlinable public static var tracked: CTState { CTState(rawValue: 0x20) }
    @inlinable public static var sourceNAT: CTState { CTState(rawValue: 0x40) }
    @inlinable public static var destinationNAT: CTState { CTState(rawValue: 0x80) }

    /// Flag names in bit order, as OVS prints them.
    public static let names: [(CTState, String)] = [
        (.new, "new"), (.established, "est"), (.related, "rel"), (.reply, "rpl"), (.invalid, "inv"),
        (.tracked, "trk"), (.sourceNAT, "snat"), (.destinationNAT, "dnat"),
    ]

    /// The flag names set, in bit order (`["est", "rpl", "trk"]`).
    public var flagNames: [String] { Self.names.filter { contains($0.0) }.map(\.1) }

    /// `+est+rpl+trk`; an untracked packet prints `-trk`.
    public var description: String {
        rawValue == 0 ? "-trk" : flagNames.map { "+" + $0 }.joined()
    }
}

/// Which way a packet travels relative to the connection's first packet.
public enum FlowDirection: UInt8, Sendable {
    case original = 0
    case reply = 1

    @inlinable public var opposite: FlowDirection { self == .original ? .reply : .original }
}

/// Why the tracker called a packet invalid; a counter label and a debug-log detail.
public enum InvalidReason: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case malformed, badFlags, badChecksum, portZero, outOfWindow, invalidRST, noConnection, cannotStart
    case badTransition, unrelatedICMPError, fragmentOverlap, fragmentTooSmall, fragmentOversize, fragmentLimit
    case fragmentExpired, fragmentMalformed

    public var description: String {
        switch self {
        case .malformed: "malformed"
        case .badFlags: "bad-tcp-flags"
        case .badChecksum: "bad-checksum"
        case .portZero: "port-zero"
        case .outOfWindow: "out-of-window"
        case .invalidRST: "invalid-rst"
        case .noConnection: "no-connection"
        case .cannotStart: "cannot-start-connection"
        case .badTransition: "bad-tcp-transition"
        case .unrelatedICMPError: "unrelated-icmp-error"
        case .fragmentOverlap: "fragment-overlap"
        case .fragmentTooSmall: "fragment-too-small"
        case .fragmentOversize: "fragment-oversize"
        case .fragmentLimit: "fragment-limit"
        case .fragmentExpired: "fragment-expired"
        case .fragmentMalformed: "fragment-malformed"
        }
    }
}

/// Names an entry of the table; stale handles (the entry was freed and reused) are detected by the generation.
public struct ConnectionHandle: Hashable, Sendable {
    /// `generation << 32 | index`, one stored word: as two fields the handle was written (into packet
    /// metadata, from a result in registers) as two 4-byte halves and read back by the stages as one 8-byte
    /// word, which store forwarding cannot serve.
    @usableFromInline let raw: UInt64

    @inlinable public var index: UInt32 { UInt32(truncatingIfNeeded: raw) }
    @inlinable public var generation: UInt32 { UInt32(truncatingIfNeeded: raw >> 32) }

    @inlinable public init(index: UInt32, generation: UInt32) {
        raw = UInt64(generation) << 32 | UInt64(index)
    }

    /// Computed, not stored: a stored static is a lazily initialised global, read through an accessor call.
    @inlinable public static var none: ConnectionHandle { ConnectionHandle(index: .max, generation: 0) }
    @inlinable public var isNone: Bool { index == .max }
}

/// What tracking says about one packet; later stages read it instead of looking the connection up again.
public struct TrackResult: Sendable, Equatable {
    /// First, so that a result returned in registers has the whole handle in one of them and is stored (into
    /// packet metadata) with one 8-byte write: split across two registers it was written as two 4-byte
    /// halves, and the stages' 8-byte reads of it right after stalled on store forwarding.
    public var handle: ConnectionHandle
    public var state: CTState
    public var zone: UInt16
    public var direction: FlowDirection
    /// Set when `state` contains `.invalid`.
    public var invalidReason: InvalidReason?

    @inlinable public init(
        state: CTState, zone: UInt16, handle: ConnectionHandle = .none, direction: FlowDirection = .original,
        invalidReason: InvalidReason? = nil
    ) {
        self.state = state
        self.zone = zone
        self.handle = handle
        self.direction = direction
        self.invalidReason = invalidReason
    }

    /// A packet the tracker does not handle (not IP).
    public static func untracked(zone: UInt16) -> TrackResult { TrackResult(state: [], zone: zone) }

    @inlinable public static func invalid(_ reason: InvalidReason, zone: UInt16) -> TrackResult {
        TrackResult(state: [.invalid, .tracked], zone: zone, invalidReason: reason)
    }
}
