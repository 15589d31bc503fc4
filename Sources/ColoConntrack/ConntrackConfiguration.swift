/// Per-state timeouts, in seconds (CONNTRACK.md defaults).
public struct ConntrackTimeouts: Sendable, Equatable {
    public var tcpSynSent: UInt32 = 120
    public var tcpSynReceived: UInt32 = 60
    public var tcpEstablished: UInt32 = 432_000
    public var tcpFinWait: UInt32 = 120
    public var tcpCloseWait: UInt32 = 60
    public var tcpLastAck: UInt32 = 30
    public var tcpTimeWait: UInt32 = 120
    public var tcpClose: UInt32 = 10
    /// Applies instead of a longer state timeout while either side has unacknowledged data.
    public var tcpUnacknowledged: UInt32 = 300
    public var udpUnreplied: UInt32 = 30
    public var udpReplied: UInt32 = 120
    public var icmp: UInt32 = 30
    public var other: UInt32 = 600

    public init() {}

    @inline(__always) func tcp(_ state: TCPState) -> UInt32 {
        switch state {
        case .none, .synSent, .synSent2: tcpSynSent
        case .synReceived: tcpSynReceived
        case .established: tcpEstablished
        case .finWait: tcpFinWait
        case .closeWait: tcpCloseWait
        case .lastAck: tcpLastAck
        case .timeWait: tcpTimeWait
        case .close: tcpClose
        }
    }
}

/// How the tracker behaves; every field has the documented default.
public struct ConntrackConfiguration: Sendable {
    /// Most connections in the table, all zones together. The table's memory grows with use up to this bound.
    public var maxConnections: Int = 262_144
    /// Entries to allocate up front. The table doubles from here up to `maxConnections`; each doubling rehashes
    /// every entry, so a proxy that expects many connections sets this near its working size.
    public var initialCapacity: Int = 1024
    /// Per-zone limits; zones not listed are bounded only by `maxConnections`.
    public var zoneLimits: [UInt16: Int] = [:]
    /// Per-zone timeouts; zones not listed use `timeouts`.
    public var zoneTimeouts: [UInt16: ConntrackTimeouts] = [:]
    public var timeouts = ConntrackTimeouts()
    /// Pick up TCP connections mid-stream (first packet an ACK), like Linux's `nf_conntrack_tcp_loose`.
    public var tcpMidStreamPickup = true
    /// Skip TCP window checks for every connection (Linux's `nf_conntrack_tcp_be_liberal`).
    public var tcpLiberal = false
    /// Verify TCP/UDP/ICMP checksums and call packets with bad ones invalid (Linux's `nf_conntrack_checksum`).
    public var checksumValidation = true
    /// Seed for the table hash; random by default so that tuples cannot be chosen to collide.
    public var hashSeed: UInt64 = UInt64.random(in: 0...UInt64.max)

    public init() {}

    @inlinable func timeouts(zone: UInt16) -> ConntrackTimeouts {
        zoneTimeouts.isEmpty ? timeouts : (zoneTimeouts[zone] ?? timeouts)
    }
}

/// What the tracker has done, for metrics and `query-stats`.
public struct ConntrackCounters: Sendable, Equatable {
    public var packets: UInt64 = 0
    public var created: UInt64 = 0
    public var destroyed: UInt64 = 0
    public var expired: UInt64 = 0
    public var invalid: UInt64 = 0
    /// Commits refused because the global limit was reached.
    public var refusedGlobalLimit: UInt64 = 0
    /// Commits refused because the zone's limit was reached.
    public var refusedZoneLimit: UInt64 = 0
    public var related: UInt64 = 0
    /// TCP connections replaced by a new SYN (port reuse from TIME_WAIT/CLOSE).
    public var reopened: UInt64 = 0
    /// Invalid packets by reason (indexed by `InvalidReason.rawValue`).
    public var invalidByReason = [UInt64](repeating: 0, count: InvalidReason.allCases.count)

    public init() {}
}
