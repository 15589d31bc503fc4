import ArgumentParser
import ColoCapture
import ColoConntrack
import ColoControl
import ColoMetrics
import ColoPacket
import ColoPorts
import ColoRuntime
import ColoStages
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// `colo-proxy run`: the proxy on live ports, from `--port`/`--object` specs (any chain, SPEC §2) or the
/// `--client/--primary/--secondary` shortcut that builds the standard chain.
public struct RunCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the proxy: mirror, rewrite and compare a primary/secondary pair live.",
        discussion: """
            Ports (--port KIND,id=ID,...) and stages (--object KIND,id=ID,...) are given in QEMU's syntax and \
            chained in command-line order, e.g. --port socket,id=pin,host=127.0.0.1,port=9003,server=on ... \
            --object colo-compare,id=cmp,primary_in=pin,secondary_in=sin,outdev=out. \
            With --client/--primary/--secondary the standard chain is built (SPEC §2): the client's traffic goes \
            to the primary and, rewritten, to the secondary; both replicas' output is compared and the primary's \
            released to the client. SIGINT or SIGTERM stop it after releasing the primary's held packets.
            """
    )

    @Option(name: .long, help: "A TOML config file (Configs/ has examples); flags override its values.")
    public var config: String?

    @Option(name: .customLong("port"), help: "A port: tap|tun|socket|nfqueue|pcap,id=ID,... (repeatable).")
    public var ports: [String] = []

    @Option(
        name: .customLong("object"),
        help:
            "A stage: filter-mirror|filter-redirector|filter-rewriter|colo-compare|conntrack|filter-dump,id=ID,... (repeatable; chained in this order)."
    )
    public var objects: [String] = []

    @Option(name: .long, help: "The client-side port of the standard chain (e.g. tap,id=c,ifname=NAME).")
    public var client: String?

    @Option(name: .long, help: "The primary replica's port.")
    public var primary: String?

    @Option(name: .long, help: "The secondary replica's port.")
    public var secondary: String?

    @Option(name: .long, help: "QMP control socket path (default /run/colo-proxy/control.sock).")
    public var control: String?

    @Flag(name: .customLong("no-control"), help: "Do not open a control socket.")
    public var noControl = false

    @Option(
        name: .customLong("event-log"), help: "Append divergence events (JSON lines) here; default standard output.")
    public var eventLog: String?

    @Option(name: .long, help: "Serve Prometheus text at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464).")
    public var metrics: String?

    @Option(
        name: .customLong("divergence-pcap"),
        help: "Write both sides' diverging packets to this pcap file (nanosecond timestamps).")
    public var divergencePcap: String?

    @Flag(
        name: .customLong("conntrack-events"),
        help: "Print `conntrack -E` lines (NEW/UPDATE/DESTROY, with the zone) on standard output as connections change."
    )
    public var conntrackEvents = false

    @Option(
        name: .customLong("compare-timeout"),
        help: "compare_timeout in milliseconds for the shortcut's colo-compare (QEMU's default 3000).")
    public var compareTimeout: UInt64?

    @Option(
        name: .customLong("on-divergence"), help: "checkpoint or release, for the shortcut's colo-compare (release).")
    public var onDivergence: String?

    public init() {}

    public func validate() throws {
        if compareTimeout == 0 {
            throw ValidationError("--compare-timeout: bad value 0 (accepted: a whole number of milliseconds > 0)")
        }
        if let onDivergence, !RunConfiguration.onDivergenceChoices.contains(onDivergence) {
            throw ValidationError("--on-divergence: bad value '\(onDivergence)' (accepted: checkpoint, release)")
        }
        _ = try plan()
    }

    /// What to run: the config file (if any) with the flags on top.
    struct Plan {
        var settings: RunConfiguration
        var ports: [PortSpec]
        var objects: [ObjectSpec]
        /// Only the three shortcut ports (all TAP) and no other stage: the dedicated TAP fast path applies.
        var tapShortcut: [TapPortSpec]?
    }

    /// The ports and stages to run: the file's and the flags' `--port`/`--object` specs, plus the standard chain
    /// when the shortcut is given; validated as a whole.
    func plan() throws -> Plan {
        var settings = RunConfiguration()
        if let config {
            do { settings = try RunConfiguration.load(path: config) } catch {
                throw ValidationError("--config \(error)")
            }
        }
        var flags: RunConfiguration
        do {
            flags = try RunConfiguration.fromFlags(
                ports: ports, objects: objects, client: client, primary: primary, secondary: secondary)
        } catch {
            throw ValidationError("\(error)")
        }
        flags.control = control
        flags.controlEnabled = noControl ? false : nil
        flags.metrics = metrics
        flags.eventLog = eventLog
        flags.divergencePcap = divergencePcap
        flags.compareTimeout = compareTimeout
        flags.onDivergence = onDivergence
        flags.conntrackEvents = conntrackEvents ? true : nil
        settings = settings.merged(with: flags)

        var portSpecs = settings.ports
        var objectSpecs = settings.objects
        var tapShortcut: [TapPortSpec]?
        if let shortcut = settings.shortcut {
            let roles = shortcut.ports
            let taps = roles.compactMap { spec -> TapPortSpec? in if case .tap(let tap) = spec { tap } else { nil } }
            // The three-TAP fast path; it keeps each frame's virtio-net header (offloads) with the frame.
            if taps.count == 3 && portSpecs.isEmpty && objectSpecs.isEmpty {
                if Set(taps.map(\.offload)).count > 1 {
                    throw ValidationError(
                        "offload: give the same value (on or off) to the client, primary and secondary TAP ports; "
                            + "a frame of 64 KiB with a partial checksum cannot go to a device without offloads")
                }
                tapShortcut = taps
            }
            portSpecs = roles + portSpecs
            objectSpecs =
                Self.standardChain(
                    client: roles[0].id, primary: roles[1].id, secondary: roles[2].id,
                    compareTimeout: settings.resolvedCompareTimeout,
                    onDivergence: settings.resolvedOnDivergence == "checkpoint" ? .checkpoint : .release)
                + objectSpecs
        }
        if tapShortcut == nil,
            let tap = portSpecs.first(where: { if case .tap(let t) = $0 { t.offload } else { false } })
        {
            throw ValidationError(
                "port '\(tap.id)': offload=on is supported on the --client/--primary/--secondary shortcut with three "
                    + "TAP ports and no other ports or objects; accepted here: offload=off")
        }
        guard !portSpecs.isEmpty else {
            throw ValidationError(
                "no ports: give --port specs (with --object stages), --client/--primary/--secondary, or --config FILE")
        }
        do {
            try ObjectSpec.validate(objects: objectSpecs, ports: portSpecs)
        } catch {
            throw ValidationError("\(error)")
        }
        return Plan(settings: settings, ports: portSpecs, objects: objectSpecs, tapShortcut: tapShortcut)
    }

    /// SPEC §2's standard chain as objects: the client's frames are mirrored to the secondary (through the
    /// rewriter on its port) and redirected to the primary; the primary's side is tracked in its zone on its port.
    public static func standardChain(
        client: String, primary: String, secondary: String, compareTimeout: UInt64 = 3000,
        onDivergence: DivergenceAction = .release
    ) -> [ObjectSpec] {
        [
            .mirror(
                MirrorSpec(id: "mirror0", attachment: FilterAttachment(netdev: client, queue: .tx), outdev: secondary)),
            .redirector(
                RedirectorSpec(
                    id: "redirector0", attachment: FilterAttachment(netdev: client, queue: .tx), indev: nil,
                    outdev: primary)),
            .conntrack(ConntrackSpec(id: "ct0", attachment: FilterAttachment(netdev: primary), zone: 1)),
            .rewriter(RewriterSpec(id: "rew0", attachment: FilterAttachment(netdev: secondary))),
            .compare(
                CompareSpec(
                    id: "comp0", primaryIn: primary, secondaryIn: secondary, outdev: client,
                    compareTimeoutMilliseconds: compareTimeout, onDivergence: onDivergence)),
        ]
    }

    /// Opens one port.
    static func open(_ spec: PortSpec) throws -> any FramePort {
        switch spec {
        case .tap(let tap):
            return DevicePort(
                id: tap.id, device: try TapDevice(name: tap.interfaceName, mode: .tap, vnetHeader: tap.vnetHeader))
        case .tun(let tun):
            return DevicePort(id: tun.id, device: try TapDevice(name: tun.interfaceName, mode: .tun))
        case .pcap(let pcap):
            return try PcapPort(spec: pcap)
        case .socket(let socket):
            return try SocketPort(spec: socket)
        case .nfqueue(let nfqueue):
            return try NFQueuePort(spec: nfqueue)
        }
    }

    public func run() throws {
        // Before any thread exists, so every thread inherits the mask and only the waiter sees the signals.
        SignalStopper.block()
        let logger = Logger(label: "colo-proxy")
        let plan = try plan()
        let (portSpecs, objectSpecs, settings) = (plan.ports, plan.objects, plan.settings)
        let log = try EventLog(path: settings.eventLog)
        if let taps = plan.tapShortcut {
            try runTapProxy(taps, settings: settings, log: log, logger: logger)
            return
        }
        var opened: [any FramePort] = []
        for spec in portSpecs {
            do { opened.append(try Self.open(spec)) } catch {
                StandardError.line("colo-proxy run: \(error)")
                throw ExitCode(2)
            }
        }
        let proxy: GraphProxy
        do {
            proxy = try GraphProxy(ports: opened, portSpecs: portSpecs, objects: objectSpecs)
        } catch {
            StandardError.line("colo-proxy run: \(error)")
            throw ExitCode(2)
        }
        let names = portSpecs.map { "\($0.kind) \($0.id)" }.joined(separator: ", ")
        let (released, dropped) = try serve(
            proxy, settings: settings, log: log, logger: logger, what: "ports \(names); \(objectSpecs.count) stages")
        for port in opened { port.close() }
        logger.info(
            "stopped: released \(released) held primary packets, dropped \(dropped) secondary ones; \(proxy.counters.unrouted) unrouted, \(proxy.counters.sendRefused) refused by ports"
        )
    }

    /// Control socket, divergence outputs, metrics and signals around `proxy.run()`; returns what the shutdown
    /// released and dropped.
    private func serve<Proxy: RunningProxy>(
        _ proxy: Proxy, settings: RunConfiguration, log: EventLog, logger: Logger, what: String
    ) throws -> (released: Int, dropped: Int) {
        let server = try controlServer(proxy.commandTable(), settings: settings)
        let pcap = try DivergencePcap(path: settings.divergencePcap)
        proxy.onDivergence = { [server] event in Self.report(event, log: log, pcap: pcap, server: server) }
        proxy.onFailover = { [server] in server?.broadcast(event: ColoQMPSchema.failoverEvent, data: [:]) }
        let metricsServer = try serveMetrics(settings) { proxy.perform(timeout: 2) { $0.metricsSnapshot() } }
        if settings.resolvedConntrackEvents { Self.printEvents(of: proxy.conntrack) }
        SignalStopper.wait { proxy.stop() }
        logger.info("running: \(what)\(settings.resolvedControl.map { ", control \($0)" } ?? "")")
        proxy.run()
        let result = proxy.drainOnShutdown()
        server?.stop()
        metricsServer?.stop()
        pcap?.flush()
        return result
    }

    private func controlServer(_ table: QMPCommandTable, settings: RunConfiguration) throws -> QMPServer? {
        guard let control = settings.resolvedControl else { return nil }
        do {
            return try QMPServer(path: control, handler: table)
        } catch {
            StandardError.line("colo-proxy run: control socket \(control): \(error)")
            throw ExitCode(2)
        }
    }

    /// Starts the `/metrics` server; a scrape the data thread does not answer in time gets the last snapshot.
    private func serveMetrics(
        _ settings: RunConfiguration, _ provider: @escaping @Sendable () -> MetricsSnapshot?
    ) throws -> MetricsServer? {
        guard let metrics = settings.metrics else { return nil }
        let last = LastSnapshot()
        do {
            return try MetricsServer(address: metrics) { last.update(provider()) }
        } catch {
            StandardError.line("colo-proxy run: --metrics \(metrics): \(error)")
            throw ExitCode(2)
        }
    }

    /// `--conntrack-events`: one `conntrack -E` line per change, written as it happens (opt-in: a write per event).
    static func printEvents(of tracker: ConnectionTracker) {
        let out = EventLog.standardOutput
        tracker.eventHandler = { kind, entry, now in out.write(ConntrackFormatter.event(kind, entry, now: now)) }
    }

    static func report(_ event: DivergenceEvent, log: EventLog, pcap: DivergencePcap?, server: QMPServer?) {
        log.write(event.json)
        pcap?.write(event)
        if let data = try? JSONValue.parse(event.json).objectValue {
            server?.broadcast(event: ColoQMPSchema.divergenceEvent, data: data)
        }
    }

    /// The standard chain on three TAP devices: the dedicated fast path (`TapProxy`).
    private func runTapProxy(
        _ specs: [TapPortSpec], settings: RunConfiguration, log: EventLog, logger: Logger
    ) throws {
        var devices: [TapDevice] = []
        for spec in specs {
            do {
                devices.append(
                    try TapDevice(
                        name: spec.interfaceName, mode: .tap, vnetHeader: spec.vnetHeader, offload: spec.offload))
            } catch {
                StandardError.line("colo-proxy run: \(error)")
                throw ExitCode(2)
            }
        }
        var configuration = TapProxy.Configuration()
        // 64 KiB segments each take a large buffer while they wait for the other replica's bytes: 1024 of them
        // (68 MiB, touched only as used) hold as much as 47,000 full-size frames would.
        if specs.contains(where: \.offload) { configuration.largeStoreBuffers = 1024 }
        configuration.compare.compareTimeout = settings.resolvedCompareTimeout * 1_000_000
        configuration.compare.onDivergence = settings.resolvedOnDivergence == "checkpoint" ? .checkpoint : .release
        let proxy: TapProxy
        do {
            proxy = try TapProxy(
                client: devices[0], primary: devices[1], secondary: devices[2], configuration: configuration)
        } catch {
            StandardError.line("colo-proxy run: \(error)")
            throw ExitCode(2)
        }
        let (released, dropped) = try serve(
            proxy, settings: settings, log: log, logger: logger,
            what: "client \(devices[0].name), primary \(devices[1].name), secondary \(devices[2].name)")
        logger.info(
            "stopped: released \(released) held primary packets to the client, dropped \(dropped) secondary ones")
    }
}

/// The last snapshot a scrape got, for scrapes the data thread is too busy to answer.
final class LastSnapshot: @unchecked Sendable {
    private let lock = NSLock()
    private var last = MetricsSnapshot()

    func update(_ fresh: MetricsSnapshot?) -> MetricsSnapshot {
        lock.lock()
        defer { lock.unlock() }
        if let fresh { last = fresh }
        return last
    }
}

/// `--divergence-pcap`: both sides' diverging packets, primary first, as the events report them.
final class DivergencePcap: @unchecked Sendable {
    private var writers: [LinkType: PcapWriter] = [:]
    private let path: String
    private var failed = false

    init?(path: String?) throws {
        guard let path else { return nil }
        self.path = path
        // Opened now so that a bad path is a start-up error, not a silent loss later.
        writers[.ethernet] = try PcapWriter(path: path, linkType: .ethernet, resolution: .nanoseconds)
    }

    func write(_ event: DivergenceEvent) {
        for side in [event.primary, event.secondary].compactMap({ $0 }) where !side.frame.isEmpty {
            // One file has one link type: raw-IP frames go to a sibling file.
            let writer: PcapWriter?
            if let existing = writers[side.linkType] {
                writer = existing
            } else {
                writer = try? PcapWriter(
                    path: path + ".linktype\(side.linkType.rawValue)", linkType: side.linkType, resolution: .nanoseconds
                )
                writers[side.linkType] = writer
            }
            do {
                try writer?.write(bytes: side.frame, timestampNanoseconds: event.time)
            } catch {
                if !failed { StandardError.line("colo-proxy run: --divergence-pcap \(path): \(error)") }
                failed = true
            }
        }
        flush()
    }

    func flush() {
        for writer in writers.values { try? writer.flush() }
    }
}

/// Divergence events as JSON lines, to a file (appended) or standard output.
final class EventLog: @unchecked Sendable {
    private let fd: Int32
    static let standardOutput = EventLog(descriptor: 1)

    private init(descriptor: Int32) { fd = descriptor }

    init(path: String?) throws {
        guard let path else {
            fd = 1
            return
        }
        let opened = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard opened >= 0 else {
            throw ValidationError("--event-log: cannot open \(path): \(String(cString: strerror(errno)))")
        }
        fd = opened
    }

    func write(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }
}

/// Turns SIGINT and SIGTERM into a call on a helper thread (not in signal context): the signals are blocked
/// everywhere and collected with sigwait.
enum SignalStopper {
    static var signals: sigset_t {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        return signals
    }

    static func block() {
        var set = signals
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    static func wait(_ action: @escaping @Sendable () -> Void) {
        let waitSet = signals
        let thread = Thread {
            var received: Int32 = 0
            var set = waitSet
            _ = sigwait(&set, &received)
            action()
        }
        thread.start()
    }
}
