import ColoPorts
import ColoRuntime
import ColoStages
import ColoTestSupport
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The single-host lab of LAB.md: client, primary and secondary namespaces on TAP devices owned by an
/// in-process `TapProxy`; the replicas are clones (same MAC and address). Removed on `close()` (and deinit).
final class ColoLab: @unchecked Sendable {
    let tag: String
    let namespaces: (client: String, primary: String, secondary: String)
    let proxy: TapProxy
    let events = EventCollector()
    private var thread: Thread?
    private var servers: [Int32] = []
    let web: TemporaryDirectory
    private let done = Atomic<Bool>(false)

    init(_ name: String, compare: CompareConfiguration = CompareConfiguration()) throws {
        tag = "\(name)-\(getpid() % 100_000)"
        namespaces = ("cc-\(tag)", "cp-\(tag)", "cs-\(tag)")
        web = try TemporaryDirectory()
        for namespace in [namespaces.client, namespaces.primary, namespaces.secondary] {
            _ = try? Command.run(["ip", "netns", "del", namespace])
            try Command.mustRun(["ip", "netns", "add", namespace])
            try Command.mustRun(["ip", "-n", namespace, "link", "set", "lo", "up"])
            // Duplicate-address detection and router solicitations carry random nonces and timing: two clones
            // would send different bytes, which a COLO proxy rightly reports. A VM pair would be checkpointed
            // through them; the lab turns them off so that its tests compare only the traffic they make.
            for setting in [
                "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.enhanced_dad=0", "net.ipv6.conf.default.enhanced_dad=0",
                "net.ipv6.conf.default.router_solicitations=0", "net.ipv6.conf.all.router_solicitations=0",
            ] {
                _ = try Command.run(["ip", "netns", "exec", namespace, "sysctl", "-qw", setting])
            }
        }
        let short = String(tag.suffix(8))
        let client = try TapDevice(name: "tc\(short)")
        let primary = try TapDevice(name: "tp\(short)")
        let secondary = try TapDevice(name: "ts\(short)")
        var configuration = TapProxy.Configuration()
        configuration.compare = compare
        proxy = try TapProxy(client: client, primary: primary, secondary: secondary, configuration: configuration)
        let events = self.events
        proxy.onDivergence = { event in events.append(event) }
        try place(
            client.name, in: namespaces.client, mac: "52:54:00:00:00:01", v4: "10.10.0.1/24", v6: "fd00:c010::1/64")
        try place(
            primary.name, in: namespaces.primary, mac: "52:54:00:00:00:02", v4: "10.10.0.2/24", v6: "fd00:c010::2/64")
        try place(
            secondary.name, in: namespaces.secondary, mac: "52:54:00:00:00:02", v4: "10.10.0.2/24",
            v6: "fd00:c010::2/64")
        let proxy = self.proxy
        let thread = Thread { proxy.run() }
        thread.start()
        self.thread = thread
    }

    private func place(_ device: String, in namespace: String, mac: String, v4: String, v6: String) throws {
        try Command.mustRun(["ip", "link", "set", device, "netns", namespace])
        try Command.mustRun(["ip", "-n", namespace, "link", "set", device, "address", mac])
        try Command.mustRun(["ip", "-n", namespace, "addr", "add", v4, "dev", device])
        try Command.mustRun(["ip", "-n", namespace, "addr", "add", v6, "dev", device, "nodad"])
        try Command.mustRun(["ip", "-n", namespace, "link", "set", device, "up"])
    }

    /// Starts `python3 -m http.server` in a replica serving `directory` (left running until `close`).
    func serve(_ directory: String, in namespace: String, port: Int = 8000) throws {
        // Python's http.server with keep-alive (HTTP/1.1) and a fixed Date header: two clones answering in
        // different seconds would otherwise differ in that header, a true divergence the lab is not testing.
        let server = """
            import functools, http.server, socket
            class Server(http.server.ThreadingHTTPServer):
                address_family = socket.AF_INET6
            H = http.server.SimpleHTTPRequestHandler
            H.protocol_version = 'HTTP/1.1'
            H.date_time_string = lambda self, t=None: 'Thu, 01 Jan 2026 00:00:00 GMT'
            H.log_message = lambda self, *a: None
            Server(('::', \(port)), functools.partial(H, directory='\(directory)')).serve_forever()
            """
        let script = "exec python3 -c \"$COLO_LAB_SERVER\" >/dev/null 2>&1"
        setenv("COLO_LAB_SERVER", server, 1)
        var pid: pid_t = 0
        let argv = ["/usr/sbin/ip", "netns", "exec", namespace, "/bin/sh", "-c", script]
        var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        guard posix_spawn(&pid, argv[0], nil, &attributes, &cArguments, environ) == 0 else {
            throw LabError(description: "could not start the web server in \(namespace)")
        }
        servers.append(pid)
        // Wait (bounded) until it listens.
        for _ in 0..<50 {
            let probe = try Command.run(["ip", "netns", "exec", namespace, "ss", "-ltn", "sport = :\(port)"])
            if probe.output.contains("LISTEN") { return }
            usleep(100_000)
        }
        throw LabError(description: "web server in \(namespace) did not start")
    }

    /// Runs a command in the client namespace.
    func client(_ arguments: [String], timeout: Double = 30) throws -> CommandResult {
        try Command.run(["ip", "netns", "exec", namespaces.client] + arguments, timeout: timeout)
    }

    func close() {
        guard !done.exchange(true, ordering: .acquiringAndReleasing) else { return }
        for pid in servers {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        proxy.stop()
        while let thread, !thread.isFinished { usleep(10_000) }
        for namespace in [namespaces.client, namespaces.primary, namespaces.secondary] {
            _ = try? Command.run(["ip", "netns", "del", namespace])
        }
    }

    deinit { close() }
}

/// Divergence events, appended on the proxy's data thread and read by the test.
final class EventCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [DivergenceEvent] = []

    func append(_ event: DivergenceEvent) {
        lock.lock()
        events.append(event)
        lock.unlock()
    }

    var all: [DivergenceEvent] {
        lock.lock()
        defer { lock.unlock() }
        return events
    }
}

/// Writes `count` bytes of a fixed pseudo-random pattern (seeded) to `path`.
func writePattern(_ path: String, count: Int, seed: UInt64) throws {
    var state = seed
    var bytes = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        bytes[i] = UInt8(truncatingIfNeeded: state >> 33)
    }
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}
