import Prometheus

/// Turns successive ``MetricsSnapshot``s into Prometheus text (exposition format 0.0.4).
///
/// Counters and gauges live in a swift-prometheus registry: counters are incremented by the change since the last
/// snapshot (a total that went down, i.e. a restarted counter, resets the series to the new total), gauges are set;
/// a gauge series missing from a later snapshot is set to 0. The release-latency histogram is rendered directly from
/// the snapshot's cumulative buckets, since the registry's histograms only take single observations.
///
/// Not thread-safe: the metrics server uses it from its one thread.
public final class MetricsRenderer {
    public static let prefix = "colo_proxy"

    private let registry = PrometheusCollectorRegistry()
    private var counters: [SeriesKey: (counter: Counter, last: UInt64)] = [:]
    private var gauges: [SeriesKey: Gauge] = [:]
    private var buffer: [UInt8] = []

    private struct SeriesKey: Hashable {
        var name: String
        var labels: [String]
    }

    public init() {}

    /// The exposition text for `snapshot`.
    public func render(_ snapshot: MetricsSnapshot) -> [UInt8] {
        update(snapshot)
        buffer.removeAll(keepingCapacity: true)
        registry.emit(into: &buffer)
        appendHistogram(snapshot.releaseLatency)
        return buffer
    }

    private func update(_ snapshot: MetricsSnapshot) {
        for traffic in snapshot.ports {
            let labels = [("port", traffic.port), ("direction", traffic.direction.rawValue)]
            count("packets", labels, traffic.packets, help: "Packets per port and direction (rx: from the port).")
            count("bytes", labels, traffic.bytes, help: "Bytes per port and direction (rx: from the port).")
        }
        count("compared_packets", [], snapshot.comparedPackets, help: "Primary packets compared with the secondary.")
        count("released_packets", [], snapshot.releasedPackets, help: "Primary packets released to the client.")
        count("dropped_packets", [], snapshot.droppedPackets, help: "Packets dropped by policy or for lack of room.")
        for divergence in snapshot.divergences {
            count(
                "divergences", [("reason", divergence.reason), ("protocol", divergence.protocolName)], divergence.count,
                help: "Divergences between the replicas by reason and protocol.")
        }

        var seen = Set<SeriesKey>()
        for zone in snapshot.conntrackEntries {
            seen.insert(
                set(
                    "conntrack_entries", [("zone", String(zone.zone))], zone.entries,
                    help: "Connection-tracking entries per zone."))
        }
        seen.insert(
            set(
                "queue_depth", [("side", MetricsSnapshot.Side.primary.rawValue)], snapshot.primaryQueueDepth,
                help: "Packets held for comparison, per replica."))
        seen.insert(
            set(
                "queue_depth", [("side", MetricsSnapshot.Side.secondary.rawValue)], snapshot.secondaryQueueDepth,
                help: "Packets held for comparison, per replica."))
        for (key, gauge) in gauges where !seen.contains(key) { gauge.set(to: 0) }
    }

    private func count(_ name: String, _ labels: [(String, String)], _ total: UInt64, help: String) {
        let key = SeriesKey(name: name, labels: labels.flatMap { [$0.0, $0.1] })
        if let existing = counters[key] {
            if total >= existing.last {
                existing.counter.increment(by: Int64(clamping: total - existing.last))
            } else {
                existing.counter.reset()
                existing.counter.increment(by: Int64(clamping: total))
            }
            counters[key]?.last = total
            return
        }
        let descriptor = MetricNameDescriptor(
            namespace: Self.prefix, metricName: name, unitName: "total", helpText: help)
        let counter = registry.makeCounter(descriptor: descriptor, labels: labels)
        counter.increment(by: Int64(clamping: total))
        counters[key] = (counter, total)
    }

    private func set(_ name: String, _ labels: [(String, String)], _ value: UInt64, help: String) -> SeriesKey {
        let key = SeriesKey(name: name, labels: labels.flatMap { [$0.0, $0.1] })
        let gauge: Gauge
        if let existing = gauges[key] {
            gauge = existing
        } else {
            let descriptor = MetricNameDescriptor(
                namespace: Self.prefix, metricName: name, unitName: "", helpText: help)
            gauge = registry.makeGauge(descriptor: descriptor, labels: labels)
            gauges[key] = gauge
        }
        gauge.set(to: Double(value))
        return key
    }

    private func appendHistogram(_ histogram: LatencyHistogram) {
        let name = "\(Self.prefix)_release_latency_seconds"
        append("# HELP \(name) Time primary packets were held before release.\n")
        append("# TYPE \(name) histogram\n")
        for (index, bound) in LatencyHistogram.upperBoundsNanoseconds.enumerated() {
            append("\(name)_bucket{le=\"\(seconds(bound))\"} \(histogram.cumulativeCounts[index])\n")
        }
        append("\(name)_bucket{le=\"+Inf\"} \(histogram.count)\n")
        append("\(name)_sum \(seconds(histogram.sumNanoseconds))\n")
        append("\(name)_count \(histogram.count)\n")
    }

    private func seconds(_ nanoseconds: UInt64) -> String {
        let whole = nanoseconds / 1_000_000_000
        var fraction = String(nanoseconds % 1_000_000_000)
        fraction = String(repeating: "0", count: 9 - fraction.count) + fraction
        while fraction.last == "0" { fraction.removeLast() }
        return fraction.isEmpty ? "\(whole)" : "\(whole).\(fraction)"
    }

    private func append(_ text: String) { buffer.append(contentsOf: text.utf8) }
}
