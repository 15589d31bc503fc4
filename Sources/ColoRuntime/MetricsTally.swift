import ColoConntrack
import ColoMetrics
import ColoStages

/// What the data thread keeps for `/metrics` beyond the counters the stages and ports already have: the release
/// latency histogram (fixed buckets; recording never allocates) and divergences by reason and protocol.
struct MetricsTally {
    var releaseLatency = LatencyHistogram()
    /// Keyed by reason and protocol; a handful of keys, added on the (rare) divergence path only.
    var divergences: [String: MetricsSnapshot.DivergenceCount] = [:]

    /// A frame the comparison released, received at `receivedAt`.
    @inline(__always)
    mutating func released(receivedAt: UInt64, now: UInt64) {
        releaseLatency.record(nanoseconds: now >= receivedAt ? now - receivedAt : 0)
    }

    mutating func diverged(_ event: DivergenceEvent) {
        let key = event.reason.rawValue + "|" + event.proto
        divergences[
            key, default: MetricsSnapshot.DivergenceCount(reason: event.reason.rawValue, protocolName: event.proto)
        ]
        .count &+= 1
    }

    /// The snapshot's shared part: comparison totals, divergences, conntrack per zone, queue depths, latency.
    func fill(_ snapshot: inout MetricsSnapshot, comparers: [Comparer], tracker: ConnectionTracker) {
        for comparer in comparers {
            let counters = comparer.counters
            snapshot.comparedPackets &+= counters.primaryPackets &+ counters.secondaryPackets
            snapshot.releasedPackets &+= counters.released
            snapshot.droppedPackets &+= counters.dropped
            let queued = comparer.queuedPackets
            snapshot.primaryQueueDepth &+= UInt64(queued.primary)
            snapshot.secondaryQueueDepth &+= UInt64(queued.secondary)
        }
        snapshot.divergences = divergences.keys.sorted().compactMap { divergences[$0] }
        var zones: [UInt16: UInt64] = [:]
        tracker.forEachEntry { _, entry in zones[entry.key.zone, default: 0] += 1 }
        snapshot.conntrackEntries = zones.keys.sorted().map {
            MetricsSnapshot.ZoneEntries(zone: $0, entries: zones[$0] ?? 0)
        }
        snapshot.releaseLatency = releaseLatency
    }
}

extension GraphProxy {
    /// The `/metrics` snapshot (call on the data thread, e.g. through `perform`).
    public func metricsSnapshot() -> MetricsSnapshot {
        var snapshot = MetricsSnapshot()
        for port in ports {
            let counters = port.portCounters
            snapshot.ports.append(
                MetricsSnapshot.PortTraffic(
                    port: port.id, direction: .tx, packets: counters.framesIn, bytes: counters.bytesIn))
            snapshot.ports.append(
                MetricsSnapshot.PortTraffic(
                    port: port.id, direction: .rx, packets: counters.framesOut, bytes: counters.bytesOut))
        }
        tally.fill(&snapshot, comparers: comparers, tracker: tracker)
        return snapshot
    }
}

extension TapProxy {
    /// The `/metrics` snapshot (call on the data thread, e.g. through `perform`).
    public func metricsSnapshot() -> MetricsSnapshot {
        var snapshot = MetricsSnapshot()
        for (name, device) in [("client", client), ("primary", primary), ("secondary", secondary)] {
            let counters = device.counters
            snapshot.ports.append(
                MetricsSnapshot.PortTraffic(
                    port: name, direction: .tx, packets: counters.framesIn, bytes: counters.bytesIn))
            snapshot.ports.append(
                MetricsSnapshot.PortTraffic(
                    port: name, direction: .rx, packets: counters.framesOut, bytes: counters.bytesOut))
        }
        tally.fill(&snapshot, comparers: [pipeline.comparer], tracker: pipeline.tracker)
        return snapshot
    }
}
