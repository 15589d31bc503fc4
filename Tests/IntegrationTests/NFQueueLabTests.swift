import CColoLinux
import ColoPorts
import ColoRuntime
import ColoStages
import ColoTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The primary host of SPEC §1.1: the client reaches the primary through a namespace that routes, whose
/// iptables rules queue the forwarded TCP to the proxy (one queue per direction); the secondary is a clone on a
/// TUN port the proxy owns (raw IP, like the queues). The primary's replies are held in the kernel until the
/// comparison releases them (ACCEPT).
///
/// ```
/// client 10.20.0.1 ── r0 [router: FORWARD → NFQUEUE qc / qp] r1 ── primary 10.30.0.2
///                              proxy: nfqueue cq, pq; tun s ── secondary 10.30.0.2
/// ```
final class NFQueueLab: @unchecked Sendable {
    let names: (client: String, router: String, primary: String, secondary: String)
    let queues: (client: UInt16, primary: UInt16)
    let tunName: String
    var proxy: GraphProxy?
    private var thread: Thread?
    private var servers: [String] = []
    let events = EventCollector()

    init(tag: String) throws {
        let suffix = "\(tag)-\(getpid() % 100_000)"
        names = ("qc-\(suffix)", "qr-\(suffix)", "qp-\(suffix)", "qs-\(suffix)")
        let base = UInt16(truncatingIfNeeded: 2000 + Int(getpid() % 1000) * 2)
        queues = (base, base + 1)
        tunName = "tq\(getpid() % 100_000)"
        do { try build() } catch {
            close()
            throw error
        }
    }

    private func run(_ namespace: String, _ arguments: [String]) throws {
        try Command.mustRun(["ip", "netns", "exec", namespace] + arguments)
    }

    private func build() throws {
        for namespace in [names.client, names.router, names.primary, names.secondary] {
            _ = try? Command.run(["ip", "netns", "del", namespace])
            try Command.mustRun(["ip", "netns", "add", namespace])
            try Command.mustRun(["ip", "-n", namespace, "link", "set", "lo", "up"])
            try run(namespace, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])
        }
        for (inside, outside, far, nearAddress, farAddress) in [
            ("r0", "c0", names.client, "10.20.0.254/24", "10.20.0.1/24"),
            ("r1", "p0", names.primary, "10.30.0.254/24", "10.30.0.2/24"),
        ] {
            try Command.mustRun([
                "ip", "-n", names.router, "link", "add", inside, "type", "veth", "peer", "name", outside, "netns", far,
            ])
            try Command.mustRun(["ip", "-n", names.router, "addr", "add", nearAddress, "dev", inside])
            try Command.mustRun(["ip", "-n", names.router, "link", "set", inside, "up"])
            try Command.mustRun(["ip", "-n", far, "addr", "add", farAddress, "dev", outside])
            try Command.mustRun(["ip", "-n", far, "link", "set", outside, "up"])
            let gateway = String(nearAddress.prefix { $0 != "/" })
            try Command.mustRun(["ip", "-n", far, "route", "add", "default", "via", gateway])
        }
        try run(names.router, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        try run(
            names.router,
            [
                "iptables", "-A", "FORWARD", "-i", "r0", "-o", "r1", "-p", "tcp", "-j", "NFQUEUE", "--queue-num",
                "\(queues.client)",
            ])
        try run(
            names.router,
            [
                "iptables", "-A", "FORWARD", "-i", "r1", "-o", "r0", "-p", "tcp", "-j", "NFQUEUE", "--queue-num",
                "\(queues.primary)",
            ])
    }

    /// Opens the ports inside the router namespace (queues bind to the namespace they are opened in), moves the
    /// TUN device to the secondary, and starts the proxy's data thread there.
    func start(objects: [String]) throws {
        let router = names.router
        let opened = OpenResult()
        let queues = self.queues
        let tunName = self.tunName
        let thread = Thread {
            let entered = CColoLinux_enterNetworkNamespace("/run/netns/\(router)")
            guard entered == 0 else {
                let reason = String(cString: strerror(-entered))
                opened.finish(.failure(LabError(description: "setns \(router): \(reason)")))
                return
            }
            do {
                let specs = try [
                    "nfqueue,id=cq,queue=\(queues.client)", "nfqueue,id=pq,queue=\(queues.primary)",
                    "tun,id=s,ifname=\(tunName)",
                ].map { try PortSpec.parse($0) }
                var ports: [any FramePort] = []
                for spec in specs {
                    switch spec {
                    case .nfqueue(let nfqueue): ports.append(try NFQueuePort(spec: nfqueue))
                    case .tun(let tun):
                        ports.append(DevicePort(id: tun.id, device: try TapDevice(name: tun.interfaceName, mode: .tun)))
                    default: break
                    }
                }
                let proxy = try GraphProxy(
                    ports: ports, portSpecs: specs, objects: try objects.map { try ObjectSpec.parse($0) })
                opened.finish(.success(proxy))
                proxy.run()
                _ = proxy.drainOnShutdown()
                for port in ports { port.close() }
            } catch {
                opened.finish(.failure(error))
            }
        }
        thread.start()
        self.thread = thread
        let proxy = try opened.wait()
        let events = self.events
        _ = proxy.perform { proxy in proxy.onDivergence = { events.append($0) } }
        self.proxy = proxy
        try Command.mustRun(["ip", "-n", names.router, "link", "set", tunName, "netns", names.secondary])
        try Command.mustRun(["ip", "-n", names.secondary, "addr", "add", "10.30.0.2/24", "dev", tunName])
        try Command.mustRun(["ip", "-n", names.secondary, "link", "set", tunName, "up"])
        try Command.mustRun(["ip", "-n", names.secondary, "route", "add", "default", "dev", tunName])
        try run(names.secondary, ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"])
    }

    /// A keep-alive HTTP/1.1 server on 10.30.0.2:8000 in both replicas, serving `directory`.
    func serve(_ directory: String) throws {
        let server = """
            import functools, http.server, socket
            # server_bind would look the address up in DNS; the secondary's only route is the proxy's TUN.
            socket.getfqdn = lambda *a: 'replica'
            H = http.server.SimpleHTTPRequestHandler
            H.protocol_version = 'HTTP/1.1'
            H.date_time_string = lambda self, t=None: 'Thu, 01 Jan 2026 00:00:00 GMT'
            H.log_message = lambda self, *a: None
            # 20 clients connect at once: a backlog of 5 would drop SYNs on one replica and not the other.
            http.server.ThreadingHTTPServer.request_queue_size = 128
            http.server.ThreadingHTTPServer(('10.30.0.2', 8000), functools.partial(H, directory='\(directory)')).serve_forever()
            """
        setenv("COLO_NFQ_SERVER", server, 1)
        for namespace in [names.primary, names.secondary] {
            let started = try Command.run([
                "ip", "netns", "exec", namespace, "sh", "-c",
                "python3 -c \"$COLO_NFQ_SERVER\" </dev/null >/tmp/\(namespace).log 2>&1 & echo $!",
            ])
            servers.append(started.output.trimmingCharacters(in: .whitespacesAndNewlines))
            var listening = false
            for _ in 0..<50 where !listening {
                let probe = try Command.run(["ip", "netns", "exec", namespace, "ss", "-ltn", "sport = :8000"])
                listening = probe.output.contains("LISTEN")
                if !listening { usleep(100_000) }
            }
            guard listening else {
                let addresses =
                    (try? Command.run([
                        "sh", "-c",
                        "ip netns exec \(namespace) ss -ltnp; ps aux | grep -c python3; cat /tmp/\(namespace).log",
                    ]).output) ?? ""
                throw LabError(description: "web server in \(namespace) did not start; addresses: \(addresses)")
            }
        }
    }

    func client(_ arguments: [String], timeout: Double = 60) throws -> CommandResult {
        try Command.run(["ip", "netns", "exec", names.client] + arguments, timeout: timeout)
    }

    func close() {
        for pid in servers where !pid.isEmpty { _ = try? Command.run(["kill", pid]) }
        servers = []
        proxy?.stop()
        while let thread, !thread.isFinished { usleep(10_000) }
        for namespace in [names.client, names.router, names.primary, names.secondary] {
            _ = try? Command.run(["ip", "netns", "del", namespace])
        }
    }

    deinit { close() }
}

/// Hands the proxy (or the error) from the thread that opened it in the router namespace.
final class OpenResult: @unchecked Sendable {
    private let condition = NSCondition()
    private var result: Result<GraphProxy, Error>?

    func finish(_ value: Result<GraphProxy, Error>) {
        condition.lock()
        result = value
        condition.signal()
        condition.unlock()
    }

    func wait() throws -> GraphProxy {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let result { return try result.get() }
            condition.wait()
        }
    }
}

@Suite("NFQUEUE on the primary host: held verdicts released by the comparison", .serialized)
struct NFQueueLabTests {
    /// 20 keep-alive connections of 10 requests each, every body checked; prints one line of counts.
    static let clientScript = """
        import http.client, hashlib, sys, threading
        expected = {i: hashlib.sha256(open(sys.argv[1] + '/f%d' % i, 'rb').read()).hexdigest() for i in range(10)}
        ok, bad, lock = [0], [0], threading.Lock()
        def worker():
            c = http.client.HTTPConnection('10.30.0.2', 8000, timeout=20)
            for i in range(10):
                c.request('GET', '/f%d' % i)
                r = c.getresponse()
                body = r.read()
                with lock:
                    if r.status == 200 and hashlib.sha256(body).hexdigest() == expected[i]: ok[0] += 1
                    else: bad[0] += 1
            c.close()
        threads = [threading.Thread(target=worker) for _ in range(20)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print('ok', ok[0], 'bad', bad[0])
        """

    @Test("200 HTTP requests over 20 keep-alive connections: byte-exact, no divergence, offsets kept")
    func httpThroughQueues() throws {
        guard Lab.requireRoot() else { return }
        let web = try TemporaryDirectory()
        for index in 0..<10 {
            try writePattern("\(web.path)/f\(index)", count: 1000 + index * 3000, seed: UInt64(index) + 7)
        }
        // Same modification time in both replicas' view (they serve the same directory): Last-Modified agrees.
        let lab = try NFQueueLab(tag: "http")
        defer { lab.close() }
        try lab.start(objects: [
            "conntrack,id=ctc,netdev=cq,queue=tx,zone=1",
            "filter-mirror,id=m,netdev=cq,queue=tx,outdev=s",
            "filter-rewriter,id=rew,netdev=s",
            "colo-compare,id=cmp,primary_in=pq,secondary_in=s,outdev=pq",
        ])
        try lab.serve(web.path)
        setenv("COLO_NFQ_CLIENT", Self.clientScript, 1)
        let result = try lab.client(["sh", "-c", "python3 -c \"$COLO_NFQ_CLIENT\" \(web.path)"], timeout: 90)
        #expect(result.output.contains("ok 200 bad 0"), "\(result)")
        let events = lab.events.all
        #expect(
            events.isEmpty,
            "\(events.count) divergences, first: \(events.first.map { String($0.json.prefix(400)) } ?? "")")
        let proxy = try #require(lab.proxy)
        let offsets = proxy.perform { proxy -> Int in
            var nonZero = 0
            proxy.tracker.forEachEntry { handle, entry in
                guard entry.key.zone == 2, let offset = proxy.rewriters.first?.offset(of: handle) else { return }
                if offset != 0 { nonZero += 1 }
            }
            return nonZero
        }
        #expect((offsets ?? 0) >= 1)
        // The primary's replies were held and released by verdict; the client's passed at once, in batches.
        let verdicts = proxy.perform { proxy -> (UInt64, UInt64, UInt64) in
            let client = proxy.ports[0] as? NFQueuePort
            let primary = proxy.ports[1] as? NFQueuePort
            return (client?.batches ?? 0, primary?.accepted ?? 0, proxy.counters.passed)
        }
        #expect((verdicts?.1 ?? 0) > 200)
        #expect((verdicts?.2 ?? 0) > 200)
    }
}
