/// What the proxy has counted so far, as the metrics server reads it on each scrape (SPEC §7).
///
/// The runtime owns one (or builds one on request) and hands a copy to ``MetricsServer``'s provider; nothing here
/// is touched per packet by the server. Counters are totals since start (the server turns them into deltas);
/// gauges are current values.
public struct MetricsSnapshot: Sendable, Equatable {
    /// Which way a port's packets went, in QEMU's `queue=` sense from the port's side (SPEC §2): `tx` = frames the port
    /// handed to the proxy, `rx` = frames the proxy handed to the port.
    public enum Direction: String, Sendable, CaseIterable {
        case rx, tx
    }

    /// Which replica's output a queue holds.
    public enum Side: String, Sendable, CaseIterable {
        case primary, secondary
    }

    /// Packets and bytes one port moved in one direction.
    public struct PortTraffic: Sendable, Equatable {
        public var port: String
        public var direction: Direction
        public var packets: UInt64
        public var bytes: UInt64

        public init(port: String, direction: Direction, packets: UInt64 = 0, bytes: UInt64 = 0) {
            self.port = port
            self.direction = direction
            self.packets = packets
            self.bytes = bytes
        }
    }

    /// Divergences of one reason (`payload`, `length`, `secondary-timeout`, `queue-overflow`, `protocol`) on one
    /// protocol (`tcp`, `udp`, `icmp`, `other`).
    public struct DivergenceCount: Sendable, Equatable {
        public var reason: String
        public var protocolName: String
        public var count: UInt64

        public init(reason: String, protocolName: String, count: UInt64 = 0) {
            self.reason = reason
            self.protocolName = protocolName
            self.count = count
        }
    }

    /// Connection-tracking entries currently in one zone.
    public struct ZoneEntries: Sendable, Equatable {
        public var zone: UInt16
        public var entries: UInt64

        public init(zone: UInt16, entries: UInt64 = 0) {
            self.zone = zone
            self.entries = entries
        }
    }

    public var ports: [PortTraffic] = []
    /// Primary packets that went through a comparison.
    public var comparedPackets: UInt64 = 0
    /// Primary packets released to the client (compared equal, timed out under `release`, or passed uncompared).
    public var releasedPackets: UInt64 = 0
    /// Packets dropped by policy or for lack of room.
    public var droppedPackets: UInt64 = 0
    public var divergences: [DivergenceCount] = []
    public var conntrackEntries: [ZoneEntries] = []
    /// Packets currently held, waiting for their comparison.
    public var primaryQueueDepth: UInt64 = 0
    public var secondaryQueueDepth: UInt64 = 0
    /// How long primary packets were held before release.
    public var releaseLatency = LatencyHistogram()

    public init() {}
}

/// A histogram with fixed buckets (10 µs … 10 s), kept as one count per bucket so that recording never allocates
/// and moves one counter: the runtime owns one and calls ``record(nanoseconds:)``; a copy goes into each snapshot.
public struct LatencyHistogram: Sendable, Equatable {
    /// Upper bounds of the buckets, in nanoseconds; `+Inf` is implied (it is ``count``).
    public static let upperBoundsNanoseconds: [UInt64] = [
        10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
        1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000,
        100_000_000, 250_000_000, 500_000_000, 1_000_000_000, 2_500_000_000, 5_000_000_000, 10_000_000_000,
    ]

    /// `cumulativeCounts[i]` = observations ≤ `upperBoundsNanoseconds[i]`.
    public var cumulativeCounts: [UInt64] {
        var running: UInt64 = 0
        return bucketCounts.map { count in
            running &+= count
            return running
        }
    }
    /// Observations in (`upperBoundsNanoseconds[i - 1]`, `upperBoundsNanoseconds[i]`]: one counter moves per
    /// observation (this is recorded for every released packet); the cumulative form is summed when read.
    private var bucketCounts: [UInt64]
    /// Sum of all observations, in nanoseconds.
    public private(set) var sumNanoseconds: UInt64 = 0
    /// Number of observations (the `+Inf` bucket).
    public private(set) var count: UInt64 = 0

    public init() {
        bucketCounts = Array(repeating: 0, count: Self.upperBoundsNanoseconds.count)
    }

    /// A histogram with the given totals, e.g. copied from counters kept elsewhere. Returns nil when
    /// `cumulativeCounts` does not have one entry per bound, is not non-decreasing, or exceeds `count`.
    public init?(cumulativeCounts: [UInt64], sumNanoseconds: UInt64, count: UInt64) {
        guard cumulativeCounts.count == Self.upperBoundsNanoseconds.count else { return nil }
        for index in cumulativeCounts.indices.dropFirst() where cumulativeCounts[index] < cumulativeCounts[index - 1] {
            return nil
        }
        guard (cumulativeCounts.last ?? 0) <= count else { return nil }
        bucketCounts = cumulativeCounts.indices.map { index in
            cumulativeCounts[index] - (index > 0 ? cumulativeCounts[index - 1] : 0)
        }
        self.sumNanoseconds = sumNanoseconds
        self.count = count
    }

    /// Adds one observation. No allocation when this value is uniquely referenced.
    public mutating func record(nanoseconds: UInt64) {
        count &+= 1
        sumNanoseconds &+= nanoseconds
        let index = Self.bucket(nanoseconds)
        if index < bucketCounts.count { bucketCounts[index] &+= 1 }
    }

    /// The bucket of an observation (`upperBoundsNanoseconds.count` for `+Inf`). Bounds go 1, 2.5, 5 per decade
    /// from 10 µs: the decade first, then the step within it, with no array read (the static bounds array costs
    /// a lazy-initialisation check and a retain on every access).
    @inline(__always)
    static func bucket(_ nanoseconds: UInt64) -> Int {
        var decade = 0
        var base: UInt64 = 10_000
        while decade < 6, nanoseconds > base * 10 {
            base *= 10
            decade += 1
        }
        // Now nanoseconds <= 10 * base, or the last decade (1 s ... 10 s, then +Inf).
        if nanoseconds <= base { return decade == 0 ? 0 : 3 * decade }
        if nanoseconds <= base * 5 / 2 { return 3 * decade + 1 }
        if nanoseconds <= base * 5 { return 3 * decade + 2 }
        if nanoseconds <= base * 10 { return 3 * decade + 3 }
        return 19
    }
}
