import ColoConntrack
import ColoControl
import ColoPorts
import ColoRuntime
import ColoStages
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The single-host lab of LAB.md: client, primary and secondary namespaces on TAP devices owned by an
/// in-process `TapProxy`; the replicas are clones (same MAC and address). Used by `colo-proxy demo` and the
/// integration tests. Removed on `close()` (and deinit) unless `keep` is set.
public final class ColoLab: @unchecked Sendable {
    public static let replicaV4 = "10.10.0.2"
    public static let replicaV6 = "fd00:c010::2"
    public static let clientV4 = "10.10.0.1"
    public static let clientV6 = "fd00:c010::1"

    public let tag: String
    public let namespaces: (client: String, primary: String, secondary: String)
    public let proxy: TapProxy
    public let events = EventCollector()
    /// The directory both replicas serve by default (removed with the lab).
    public let web: LabDirectory
    /// Leave the namespaces in place on close (the demo's `--keep`).
    public var keep = false
    private var thread: Thread?
    private let servers = Mutex<[pid_t]>([])
    private let done = Atomic<Bool>(false)

    public var allNamespaces: [String] { [namespaces.client, namespaces.primary, namespaces.secondary] }

    /// Builds the namespaces, the TAP devices and starts the proxy on its own thread.
    /// With `offload`, the TAP devices offer checksum and TCP segmentation offload to the namespaces' stacks (the
    /// proxy then reads and compares segments of up to 64 KiB), as `tap,...,offload=on` does.
    public init(_ name: String, compare: CompareConfiguration = CompareConfiguration(), offload: Bool = false) throws {
        guard geteuid() == 0 else { throw LabFailure("the lab needs root (network namespaces and TAP devices)") }
        tag = "\(name)-\(getpid() % 100_000)"
        namespaces = ("cc-\(tag)", "cp-\(tag)", "cs-\(tag)")
        web = try LabDirectory()
        for namespace in [namespaces.client, namespaces.primary, namespaces.secondary] {
            _ = try? LabShell.run(["ip", "netns", "del", namespace])
            try LabShell.mustRun(["ip", "netns", "add", namespace])
            try LabShell.mustRun(["ip", "-n", namespace, "link", "set", "lo", "up"])
            // Duplicate-address detection and router solicitations carry random nonces and timing: two clones
            // would send different bytes, which a COLO proxy rightly reports. A VM pair would be checkpointed
            // through them; the lab turns them off so that it compares only the traffic it makes.
            for setting in [
                "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.enhanced_dad=0", "net.ipv6.conf.default.enhanced_dad=0",
                "net.ipv6.conf.default.router_solicitations=0", "net.ipv6.conf.all.router_solicitations=0",
            ] {
                _ = try LabShell.run(["ip", "netns", "exec", namespace, "sysctl", "-qw", setting])
            }
        }
        let short = String(tag.suffix(8))
        let client = try TapDevice(name: "tc\(short)", vnetHeader: offload, offload: offload)
        let primary = try TapDevice(name: "tp\(short)", vnetHeader: offload, offload: offload)
        let secondary = try TapDevice(name: "ts\(short)", vnetHeader: offload, offload: offload)
        var configuration = TapProxy.Configuration()
        configuration.compare = compare
        if offload { configuration.largeStoreBuffers = 1024 }
        proxy = try TapProxy(client: client, primary: primary, secondary: secondary, configuration: configuration)
        let events = self.events
        proxy.onDivergence = { event in events.append(event) }
        do {
            try place(
                client.name, in: namespaces.client, mac: "52:54:00:00:00:01", v4: "\(Self.clientV4)/24",
                v6: "\(Self.clientV6)/64")
            try place(
                primary.name, in: namespaces.primary, mac: "52:54:00:00:00:02", v4: "\(Self.replicaV4)/24",
                v6: "\(Self.replicaV6)/64")
            try place(
                secondary.name, in: namespaces.secondary, mac: "52:54:00:00:00:02", v4: "\(Self.replicaV4)/24",
                v6: "\(Self.replicaV6)/64")
        } catch {
            removeNamespaces()
            throw error
        }
        let proxy = self.proxy
        let thread = Thread { proxy.run() }
        thread.start()
        self.thread = thread
    }

    private func place(_ device: String, in namespace: String, mac: String, v4: String, v6: String) throws {
        try LabShell.mustRun(["ip", "link", "set", device, "netns", namespace])
        try LabShell.mustRun(["ip", "-n", namespace, "link", "set", device, "address", mac])
        try LabShell.mustRun(["ip", "-n", namespace, "addr", "add", v4, "dev", device])
        try LabShell.mustRun(["ip", "-n", namespace, "addr", "add", v6, "dev", device, "nodad"])
        try LabShell.mustRun(["ip", "-n", namespace, "link", "set", device, "up"])
    }

    /// The replicas' address as it goes into a URL.
    public static func urlHost(ipv6: Bool) -> String { ipv6 ? "[\(replicaV6)]" : replicaV4 }

    /// Starts a threaded HTTP/1.1 keep-alive server (python's http.server) in a replica serving `directory`;
    /// left running until `close`. Listens on IPv4 and IPv6.
    public func serve(_ directory: String, in namespace: String, port: Int = 8000) throws {
        // A fixed Date header: two clones answering in different seconds would otherwise differ in it, a true
        // divergence the lab is not testing. The listen backlog is raised from python's 5: with many parallel
        // clients one clone would drop a SYN and the other not (also a true divergence). getfqdn is replaced
        // because server_bind would otherwise wait on a reverse DNS lookup.
        let server = """
            import functools, http.server, socket
            socket.getfqdn = lambda *a: 'replica'
            class Server(http.server.ThreadingHTTPServer):
                address_family = socket.AF_INET6
                request_queue_size = 128
                daemon_threads = True
            H = http.server.SimpleHTTPRequestHandler
            H.protocol_version = 'HTTP/1.1'
            H.date_time_string = lambda self, t=None: 'Thu, 01 Jan 2026 00:00:00 GMT'
            H.log_message = lambda self, *a: None
            Server(('::', \(port)), functools.partial(H, directory='\(directory)')).serve_forever()
            """
        try startServer(in: namespace, script: server, listening: "sport = :\(port)", tcp: true)
    }

    /// Starts a UDP echo server in a replica (answers each datagram with "echo:" + the datagram).
    public func serveUDPEcho(in namespace: String, port: Int = 9000) throws {
        let server = """
            import socket
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.bind(('::', \(port)))
            while True:
                data, peer = s.recvfrom(65535)
                s.sendto(b'echo:' + data, peer)
            """
        try startServer(in: namespace, script: server, listening: "sport = :\(port)", tcp: false)
    }

    private func startServer(in namespace: String, script: String, listening filter: String, tcp: Bool) throws {
        let pid = try LabShell.start(["ip", "netns", "exec", namespace, "python3", "-c", script])
        servers.withLock { $0.append(pid) }
        for _ in 0..<50 {
            let probe = try LabShell.run(["ip", "netns", "exec", namespace, "ss", tcp ? "-ltn" : "-lun", filter])
            if probe.output.contains(tcp ? "LISTEN" : "UNCONN") { return }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                throw LabFailure("the server in \(namespace) exited (is python3 installed?)")
            }
            usleep(100_000)
        }
        throw LabFailure("the server in \(namespace) did not start listening")
    }

    /// Runs a command in the client namespace.
    public func client(_ arguments: [String], timeout: Double = 30) throws -> LabResult {
        try LabShell.run(["ip", "netns", "exec", namespaces.client] + arguments, timeout: timeout)
    }

    /// Runs a command in a namespace of the lab.
    public func run(in namespace: String, _ arguments: [String], timeout: Double = 30) throws -> LabResult {
        try LabShell.run(["ip", "netns", "exec", namespace] + arguments, timeout: timeout)
    }

    /// Serves `files` pattern files from both replicas (`f0.bin`, 20,000 bytes and 9,000 more each next one).
    public func serveIdenticalFiles(_ files: Int = 10) throws {
        for index in 0..<files {
            try writePattern(web.path + "/f\(index).bin", count: 20_000 + index * 9_000, seed: 42)
        }
        try serve(web.path, in: namespaces.primary)
        try serve(web.path, in: namespaces.secondary)
    }

    /// `connections` keep-alive curl clients in parallel, each fetching every file `serveIdenticalFiles` made;
    /// returns how the clients ended and how many responses were byte-exact.
    public func fetchEveryFile(
        _ files: Int = 10, connections: Int = 20, ipv6: Bool = false,
        around run: (() throws -> LabResult) throws -> LabResult = { try $0() }
    ) throws -> (result: LabResult, exact: Int) {
        let downloads = try LabDirectory()
        var script = ""
        for connection in 0..<connections {
            let urls = (0..<files).map {
                "http://\(Self.urlHost(ipv6: ipv6)):8000/f\($0).bin -o \(downloads.path)/c\(connection)-f\($0).bin"
            }
            script += "curl -sf --max-time 60 \(urls.joined(separator: " ")) & "
        }
        let result = try run { try client(["/bin/sh", "-c", script + "wait"], timeout: 90) }
        var exact = 0
        for connection in 0..<connections {
            for index in 0..<files {
                let got = FileManager.default.contents(atPath: "\(downloads.path)/c\(connection)-f\(index).bin")
                if got != nil && got == FileManager.default.contents(atPath: "\(web.path)/f\(index).bin") {
                    exact += 1
                }
            }
        }
        return (result, exact)
    }

    /// The rewriter's offset for each TCP connection it tracks (secondary zone), read on the data thread.
    public func connectionOffsets() -> [ConnectionOffset] {
        proxy.perform { proxy -> [ConnectionOffset] in
            var found: [ConnectionOffset] = []
            proxy.pipeline.tracker.forEachEntry { handle, entry in
                if entry.key.zone == ColoPipeline.secondaryZone, entry.key.protocolNumber == 6,
                    let offset = proxy.pipeline.rewriter.offset(of: handle)
                {
                    found.append(ConnectionOffset(connection: "\(entry.key)", offset: offset))
                }
            }
            return found
        } ?? []
    }

    /// The comparer's counters, read on the data thread.
    public func compareCounters() -> CompareCounters {
        proxy.perform { $0.pipeline.comparer.counters } ?? CompareCounters()
    }

    /// The proxy's port counters (frames in and out, large frames), read on the data thread.
    public func portCounters() -> TapProxy.Counters {
        proxy.perform { $0.counters } ?? TapProxy.Counters()
    }

    /// Takes the primary off the network (its link and loopback down), as a dead primary would be.
    public func takePrimaryDown() throws {
        _ = try LabShell.run(["ip", "-n", namespaces.primary, "link", "set", "lo", "down"])
        _ = try LabShell.run(["ip", "-n", namespaces.primary, "link", "set", proxy.primary.name, "down"])
    }

    /// Stops the servers and the proxy and deletes the namespaces (unless `keep`). Safe to call twice.
    public func close() {
        guard !done.exchange(true, ordering: .acquiringAndReleasing) else { return }
        stopServers()
        proxy.stop()
        while let thread, !thread.isFinished { usleep(10_000) }
        if !keep { removeNamespaces() }
    }

    /// Kills the servers and deletes the namespaces without waiting for the proxy (signal-time cleanup).
    public func emergencyCleanup() {
        stopServers()
        removeNamespaces()
    }

    private func stopServers() {
        let pids = servers.withLock { pids -> [pid_t] in
            defer { pids.removeAll() }
            return pids
        }
        for pid in pids {
            kill(pid, SIGTERM)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }

    private func removeNamespaces() {
        for namespace in allNamespaces { _ = try? LabShell.run(["ip", "netns", "del", namespace]) }
    }

    deinit { close() }
}

/// One TCP connection's rewriter offset.
public struct ConnectionOffset: Sendable, CustomStringConvertible {
    public var connection: String
    public var offset: UInt32
    public var description: String { "\(connection) offset \(offset)" }
}

/// Divergence events, appended on the proxy's data thread and read by the caller.
public final class EventCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [DivergenceEvent] = []

    public init() {}

    public func append(_ event: DivergenceEvent) {
        lock.lock()
        events.append(event)
        lock.unlock()
    }

    public var all: [DivergenceEvent] {
        lock.lock()
        defer { lock.unlock() }
        return events
    }
}

/// Writes `count` bytes of a fixed pseudo-random pattern (seeded) to `path`.
public func writePattern(_ path: String, count: Int, seed: UInt64) throws {
    var state = seed
    var bytes = [UInt8](repeating: 0, count: count)
    for i in 0..<count {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        bytes[i] = UInt8(truncatingIfNeeded: state >> 33)
    }
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// The sha256 of a file (hex), by `sha256sum`.
public func sha256(ofFile path: String) throws -> String {
    let result = try LabShell.run(["sha256sum", path], timeout: 60)
    guard result.succeeded, let digest = result.output.split(separator: " ").first else {
        throw LabFailure("sha256sum \(path): \(result)")
    }
    return String(digest)
}

extension ColoLab {
    /// Runs a control-socket command (SPEC §7) through the proxy's command table, as `colo-proxy ctl` would.
    public func command(_ name: String, _ arguments: JSONObject = [:]) -> Result<JSONValue, QMPError> {
        proxy.commandTable().execute(name: name, arguments: arguments)
    }

    /// `query-connections`' rows for the secondary's TCP connections that carry a rewriter offset.
    public func queriedOffsets() -> [(connection: String, offset: Int64)] {
        guard case .success(let value) = command("query-connections"), let rows = value.arrayValue else { return [] }
        return rows.compactMap { row in
            guard row["proto"]?.stringValue == "tcp", let offset = row["offset"]?.integerValue else { return nil }
            let connection =
                "\(row["src"]?.stringValue ?? "?"):\(row["sport"]?.integerValue ?? 0) → "
                + "\(row["dst"]?.stringValue ?? "?"):\(row["dport"]?.integerValue ?? 0)"
            return (connection, offset)
        }
    }
}

/// Two versions of one 50,000-byte page that differ in body byte `differingByte`, each in its own directory,
/// served by the primary and the secondary respectively (the diverge and checkpoint scenarios).
public struct DivergingPage {
    public static let name = "page.bin"
    public let primary: LabDirectory
    public let secondary: LabDirectory
    public let differingByte: Int
    public var primaryPath: String { primary.path + "/" + Self.name }

    /// Writes both versions and starts one web server in each replica.
    public init(serving lab: ColoLab, differingByte: Int = 10_000) throws {
        primary = try LabDirectory()
        secondary = try LabDirectory()
        self.differingByte = differingByte
        try writePattern(primaryPath, count: 50_000, seed: 7)
        var other = try Data(contentsOf: URL(fileURLWithPath: primaryPath))
        other[differingByte] ^= 0x55
        try other.write(to: URL(fileURLWithPath: secondary.path + "/" + Self.name))
        try lab.serve(primary.path, in: lab.namespaces.primary)
        try lab.serve(secondary.path, in: lab.namespaces.secondary)
    }
}
