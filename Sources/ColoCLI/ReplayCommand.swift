import ArgumentParser
import ColoCapture
import ColoConntrack
import ColoPacket
import ColoStages

/// `colo-proxy replay`: the COLO stages fed from captures instead of ports.
public struct ReplayCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Compare a primary and a secondary capture offline, as the proxy would live.",
        discussion: """
            The captures hold each replica's output (and optionally the client's): they are merged in timestamp \
            order and run through conntrack, filter-rewriter and colo-compare with the standard chain. Prints the \
            divergence events and a summary. Exit 0: no divergence; 1: divergences found; 2: bad input.
            """
    )

    @Option(name: .long, help: "Capture of the primary replica's output (pcap or pcapng).")
    public var primary: String

    @Option(name: .long, help: "Capture of the secondary replica's output.")
    public var secondary: String

    @Option(
        name: .long, help: "Capture of the client's packets (optional; lets the rewriter learn from the handshake).")
    public var client: String?

    @Option(name: .long, help: "Output format: text or json.")
    public var format: OutputFormat = .text

    @Option(name: .customLong("divergence-pcap"), help: "Write both sides' diverging packets to this pcap file.")
    public var divergencePcap: String?

    @Option(name: .customLong("compare-timeout"), help: "compare_timeout in milliseconds (QEMU's default 3000).")
    public var compareTimeout: UInt64 = 3000

    @Option(name: .customLong("max-queue-size"), help: "max_queue_size per connection (QEMU's default 1024).")
    public var maxQueueSize: Int = 1024

    @Flag(name: .customLong("align-start"), help: "Shift each capture so that its first packet is at time 0.")
    public var alignStart = false

    public init() {}

    public func validate() throws {
        guard compareTimeout > 0 else {
            throw ValidationError("--compare-timeout: bad value 0 (accepted: a whole number of milliseconds > 0)")
        }
        guard maxQueueSize > 0 else {
            throw ValidationError("--max-queue-size: bad value \(maxQueueSize) (accepted: a whole number > 0)")
        }
    }

    public func run() throws {
        var output = StandardOutput()
        let result: ReplayReport
        do throws(CaptureError) {
            var settings = ReplaySettings()
            settings.compareTimeout = compareTimeout * 1_000_000
            settings.maxQueueSize = maxQueueSize
            settings.alignStart = alignStart
            settings.divergencePcap = divergencePcap
            result = try Self.replay(
                primary: primary, secondary: secondary, client: client, settings: settings, format: format
            ) { output.write($0) }
        } catch {
            output.flush()
            StandardError.line("colo-proxy replay: \(error)")
            throw ExitCode(2)
        }
        output.flush()
        if result.events.isEmpty == false { throw ExitCode(1) }
    }

    /// Settings beyond the three files.
    public struct ReplaySettings: Sendable {
        public var compareTimeout: UInt64 = 3_000_000_000
        public var maxQueueSize = 1024
        public var alignStart = false
        public var divergencePcap: String?
        public init() {}
    }

    /// What a replay found.
    public struct ReplayReport: Sendable {
        public var events: [DivergenceEvent] = []
        public var compare = CompareCounters()
        public var rewriter = RewriterCounters()
        public var connections = 0
        public var packets = (client: 0, primary: 0, secondary: 0)
        /// Packets the store had no room for (not compared).
        public var refused = 0
    }

    /// Runs the stages over the captures, handing output lines to `emit`.
    @discardableResult
    public static func replay(
        primary: String, secondary: String, client: String?, settings: ReplaySettings = ReplaySettings(),
        format: OutputFormat = .text, emit: (String) -> Void
    ) throws(CaptureError) -> ReplayReport {
        var compare = CompareConfiguration()
        compare.compareTimeout = settings.compareTimeout
        compare.maxQueueSize = settings.maxQueueSize
        compare.onDivergence = .release
        let store = PacketStore(small: 32768, large: 256)
        let pipeline = ColoPipeline(store: store, compare: compare)
        var report = ReplayReport()

        var inputs: [(reader: CaptureReader, source: PacketSource, shift: Int64)] = [
            (try CaptureReader(path: primary), .primary, 0), (try CaptureReader(path: secondary), .secondary, 0),
        ]
        if let client { inputs.append((try CaptureReader(path: client), .client, 0)) }
        // The next record of each input, owned (the reader's buffer is reused by its next call).
        var heads: [OwnedRecord?] = []
        for index in inputs.indices {
            let record = try inputs[index].reader.next().map(OwnedRecord.init)
            if settings.alignStart, let first = record { inputs[index].shift = -Int64(first.timestampNanoseconds) }
            heads.append(record)
        }

        var writer: PcapWriter?
        if let path = settings.divergencePcap { writer = try PcapWriter(path: path, linkType: .ethernet) }
        var now: UInt64 = 0
        var lastTick: UInt64 = 0
        var eventsSeen = 0

        func emitEvents() throws(CaptureError) {
            let events = pipeline.comparer.events
            while eventsSeen < events.count {
                let event = events[eventsSeen]
                eventsSeen += 1
                emit(format == .json ? event.json : event.summary)
                if let writer {
                    for side in [event.primary, event.secondary] {
                        guard let side, side.linkType == .ethernet else { continue }
                        try writer.write(bytes: side.frame, timestampNanoseconds: side.timestamp)
                    }
                }
            }
        }

        func drain() {
            for list in [pipeline.toClient, pipeline.toPrimary, pipeline.toSecondary] {
                for ref in list { store.release(ref) }
            }
            pipeline.toClient.removeAll(keepingCapacity: true)
            pipeline.toPrimary.removeAll(keepingCapacity: true)
            pipeline.toSecondary.removeAll(keepingCapacity: true)
        }

        while true {
            // The earliest pending record across the inputs.
            var next = -1
            var earliest = Int64.max
            for index in heads.indices {
                guard let record = heads[index] else { continue }
                let time = Int64(bitPattern: record.timestampNanoseconds) &+ inputs[index].shift
                if time < earliest {
                    earliest = time
                    next = index
                }
            }
            guard next >= 0, let record = heads[next] else { break }
            now = max(now, UInt64(max(0, earliest)))
            let source = inputs[next].source
            let stored = record.bytes.withUnsafeBytes {
                store.store($0, linkType: record.linkType, source: source, receivedAt: now)
            }
            if let ref = stored {
                switch source {
                case .client:
                    report.packets.client += 1
                    pipeline.fromClient(ref, now: now)
                case .primary:
                    report.packets.primary += 1
                    pipeline.fromPrimary(ref, now: now)
                case .secondary:
                    report.packets.secondary += 1
                    pipeline.fromSecondary(ref, now: now)
                case .other:
                    store.release(ref)
                }
            } else {
                report.refused += 1
            }
            if now &- lastTick >= 100_000_000 {
                pipeline.tick(now: now)
                lastTick = now
            }
            drain()
            try emitEvents()
            heads[next] = try inputs[next].reader.next().map(OwnedRecord.init)
        }
        // The captures have ended: whatever is still waiting for its counterpart waits in vain.
        now &+= settings.compareTimeout &+ compare.expiredScanCycle
        pipeline.tick(now: now)
        drain()
        try emitEvents()
        try writer?.close()

        report.events = pipeline.comparer.events
        report.compare = pipeline.comparer.counters
        report.rewriter = pipeline.rewriter.counters
        report.connections = Int(report.compare.connectionsCompared)
        emit(format == .json ? summaryJSON(report) : summaryText(report))
        return report
    }

    static func summaryText(_ r: ReplayReport) -> String {
        let reasons = DivergenceReason.allCases.compactMap { reason -> String? in
            guard let count = r.compare.divergencesByReason[reason], count > 0 else { return nil }
            return "\(reason.rawValue) \(count)"
        }
        var text = "summary: \(r.connections) connections compared; packets: \(r.packets.primary) primary, "
        text += "\(r.packets.secondary) secondary, \(r.packets.client) client; \(r.compare.bytesCompared) TCP bytes "
        text += "and \(r.compare.datagramsMatched) datagrams matched; \(r.rewriter.learned) offsets learned; "
        text += "\(r.events.count) divergence\(r.events.count == 1 ? "" : "s")"
        if !reasons.isEmpty { text += " (" + reasons.joined(separator: ", ") + ")" }
        if r.refused > 0 { text += "; \(r.refused) packets not compared (packet store full)" }
        return text
    }

    static func summaryJSON(_ r: ReplayReport) -> String {
        var reasons: [String] = []
        for reason in DivergenceReason.allCases {
            reasons.append("\"\(reason.rawValue)\":\(r.compare.divergencesByReason[reason] ?? 0)")
        }
        return "{\"event\":\"summary\",\"connections\":\(r.connections),\"packets\":{\"primary\":\(r.packets.primary),"
            + "\"secondary\":\(r.packets.secondary),\"client\":\(r.packets.client)},\"tcp_bytes_compared\":"
            + "\(r.compare.bytesCompared),\"datagrams_matched\":\(r.compare.datagramsMatched),\"offsets_learned\":"
            + "\(r.rewriter.learned),\"divergences\":\(r.events.count),\"by_reason\":{\(reasons.joined(separator: ","))},"
            + "\"released\":\(r.compare.released),\"dropped\":\(r.compare.dropped),\"not_compared\":\(r.refused)}"
    }
}
