import ColoControl
import ColoTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

@Suite("QMPServer over a Unix socket")
struct QMPServerTests {
    @Test("the socket is created with mode 0600 and removed by stop()")
    func socketMode() throws {
        let directory = try TemporaryDirectory()
        let path = "\(directory.path)/control.sock"
        let server = try QMPServer(path: path, handler: FakeHandler())
        var status = stat()
        #expect(lstat(path, &status) == 0, "socket file exists")
        #expect(status.st_mode & S_IFMT == S_IFSOCK, "it is a socket")
        #expect(status.st_mode & 0o7777 == 0o600, "mode is 0600, found \(String(status.st_mode & 0o7777, radix: 8))")
        let client = try QMPTestClient(path: path)
        try client.negotiate()
        server.stop()
        #expect(lstat(path, &status) != 0 && errno == ENOENT, "socket file removed by stop()")
        #expect(client.readUntilClosed(timeout: 5), "the client sees the connection closed")
        server.stop()  // idempotent
    }

    @Test("two clients are served independently and both receive a broadcast event")
    func twoClientsAndEvents() throws {
        let directory = try TemporaryDirectory()
        let path = "\(directory.path)/control.sock"
        let handler = FakeHandler()
        let server = try QMPServer(path: path, handler: handler)
        defer { server.stop() }

        let first = try QMPTestClient(path: path)
        let second = try QMPTestClient(path: path)
        let unnegotiated = try QMPTestClient(path: path)
        try first.negotiate()
        try second.negotiate()
        _ = try unnegotiated.readJSON()  // greeting only
        #expect(try first.execute("query-status")["return"]?["status"] == "running")
        #expect(
            try second.execute("filter-set-status", arguments: ["id": "m0", "status": "on"]) == ["return": [:]])
        #expect(waitUntil { server.negotiatedClientCount == 2 && server.clientCount == 3 }, "counts seen by the server")

        server.broadcast(event: "DIVERGENCE", data: ["reason": "payload", "stream_offset": 1234])
        server.broadcast(event: "FAILOVER")
        for client in [first, second] {
            let divergence = try client.readJSON()
            #expect(divergence["event"] == "DIVERGENCE")
            #expect(divergence["data"] == ["reason": "payload", "stream_offset": 1234])
            #expect(divergence["timestamp"]?["seconds"]?.integerValue != nil, "timestamp: \(divergence)")
            #expect(divergence["timestamp"]?["microseconds"]?.integerValue != nil, "timestamp: \(divergence)")
            let failover = try client.readJSON()
            #expect(failover["event"] == "FAILOVER" && failover["data"] == nil, "\(failover)")
        }
        // The unnegotiated client got no event: its first line after negotiating is the answer.
        try unnegotiated.send(#"{"execute": "qmp_capabilities", "id": "late"}"# + "\n")
        #expect(try unnegotiated.readJSON() == ["return": [:], "id": "late"])
        #expect(handler.calls.map(\.name) == ["query-status", "filter-set-status"])
    }

    @Test("a client that never reads is dropped while another keeps working")
    func slowClient() throws {
        let directory = try TemporaryDirectory()
        let path = "\(directory.path)/control.sock"
        var configuration = QMPServer.Configuration()
        configuration.maximumOutputBytesPerClient = 64 * 1024
        let logged = LogRecorder()
        configuration.log = { logged.append($0) }
        let server = try QMPServer(path: path, handler: FakeHandler(), configuration: configuration)
        defer { server.stop() }

        let stalled = try QMPTestClient(path: path)
        try stalled.negotiate()
        let reader = try QMPTestClient(path: path)
        try reader.negotiate()
        #expect(waitUntil { server.negotiatedClientCount == 2 })

        let blob = JSONValue.string(String(repeating: "x", count: 1000))
        var received = 0
        for round in 0..<100 {
            for index in 0..<20 {
                server.broadcast(event: "DIVERGENCE", data: ["n": .integer(Int64(round * 20 + index)), "blob": blob])
            }
            for _ in 0..<20 {
                let event = try reader.readJSON()
                #expect(event["data"]?["n"] == .integer(Int64(received)), "events arrive in order, none lost")
                received += 1
            }
        }
        #expect(received == 2000)
        #expect(try reader.execute("query-status")["return"]?["status"] == "running", "the reader is still served")
        #expect(
            waitUntil { server.droppedSlowClientCount == 1 && server.clientCount == 1 }, "the stalled one is dropped")
        #expect(stalled.readUntilClosed(timeout: 10), "the stalled client's connection is closed")
        #expect(logged.lines.contains { $0.contains("dropped") }, "the drop is logged: \(logged.lines)")
    }

    @Test("a stale socket file is replaced; a live one or a regular file is refused")
    func staleSocket() throws {
        let directory = try TemporaryDirectory()
        let path = "\(directory.path)/control.sock"

        // A socket bound by a process that went away: the file stays, nobody listens.
        let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { sunPath in
            for (index, byte) in path.utf8.enumerated() { sunPath[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0, "stale socket bound")
        close(stale)

        let server = try QMPServer(path: path, handler: FakeHandler())
        let client = try QMPTestClient(path: path)
        try client.negotiate()
        #expect(try client.execute("query-stats")["return"]?["compared"] == 10)

        #expect(throws: QMPServerError.alreadyServed(path: path)) {
            try QMPServer(path: path, handler: FakeHandler())
        }
        #expect(try client.execute("query-stats")["return"] != nil, "the live server is untouched")
        server.stop()

        let regular = "\(directory.path)/not-a-socket"
        let descriptor = open(regular, O_CREAT | O_WRONLY, 0o644)
        close(descriptor)
        #expect(throws: QMPServerError.notASocket(path: regular)) {
            try QMPServer(path: regular, handler: FakeHandler())
        }
        var status = stat()
        #expect(lstat(regular, &status) == 0 && status.st_mode & S_IFMT == S_IFREG, "the regular file is left alone")

        let long = "/tmp/" + String(repeating: "x", count: 200)
        #expect(throws: QMPServerError.pathTooLong(path: long, limit: 107)) {
            try QMPServer(path: long, handler: FakeHandler())
        }
    }

    @Test("a command may broadcast an event from the I/O thread")
    func broadcastFromCommand() throws {
        let directory = try TemporaryDirectory()
        let path = "\(directory.path)/control.sock"
        let box = ServerBox()
        var table = QMPCommandTable()
        table.register(ColoQMPSchema.lostHeartbeat) { _ in
            box.server?.broadcast(event: ColoQMPSchema.failoverEvent, data: ["to": "secondary"])
            return .success([:])
        }
        let server = try QMPServer(path: path, handler: table)
        box.server = server
        defer {
            server.stop()
            box.server = nil
        }
        let client = try QMPTestClient(path: path)
        try client.negotiate()
        try client.send(#"{"execute": "x-colo-lost-heartbeat"}"# + "\n")
        #expect(try client.readJSON() == ["return": [:]])
        let event = try client.readJSON()
        #expect(event["event"] == "FAILOVER" && event["data"] == ["to": "secondary"], "\(event)")
    }
}

/// Collects log lines from the server's thread.
final class LogRecorder: Sendable {
    private let storage = Mutex<[String]>([])
    func append(_ line: String) { storage.withLock { $0.append(line) } }
    var lines: [String] { storage.withLock { $0 } }
}

/// Lets a command body reach the server created after it.
final class ServerBox: Sendable {
    private let storage = Mutex<QMPServer?>(nil)
    var server: QMPServer? {
        get { storage.withLock { $0 } }
        set { storage.withLock { $0 = newValue } }
    }
}
