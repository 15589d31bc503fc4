import ColoMetrics
import ColoTestSupport
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A snapshot the test changes between scrapes, standing in for the runtime's.
final class SnapshotSource: Sendable {
    private let current = Mutex(MetricsSnapshot())
    func set(_ body: (inout MetricsSnapshot) -> Void) { current.withLock { body(&$0) } }
    var provider: @Sendable () -> MetricsSnapshot { { self.current.withLock { $0 } } }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
}

/// Connects to 127.0.0.1:`port`, sends `request`, and reads until the server closes (2 s timeout).
func exchange(port: UInt16, _ request: [UInt8], closeWrite: Bool = false) throws -> (
    status: Int, head: String, body: String
) {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw TestFailure(description: "socket failed") }
    defer { close(descriptor) }
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { throw TestFailure(description: "connect: \(String(cString: strerror(errno)))") }
    _ = request.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    if closeWrite { shutdown(descriptor, Int32(SHUT_WR)) }
    var received: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
        if count < 0 { throw TestFailure(description: "recv: \(String(cString: strerror(errno)))") }
        if count == 0 { break }
        received += chunk[0..<count]
    }
    let text = String(decoding: received, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else {
        throw TestFailure(description: "no head in \(text.debugDescription)")
    }
    let head = String(text[..<split.lowerBound])
    let statusText = head.split(separator: " ").dropFirst().first.map(String.init) ?? ""
    guard let status = Int(statusText) else { throw TestFailure(description: "no status in \(head)") }
    return (status, head, String(text[split.upperBound...]))
}

func get(_ path: String, port: UInt16) throws -> (status: Int, head: String, body: String) {
    try exchange(port: port, Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n".utf8))
}

/// A parsed exposition: samples by `name{labels}` text, and TYPE per family; records an issue per bad line.
struct Exposition {
    var samples: [String: Double] = [:]
    var types: [String: String] = [:]

    init(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let name = "[a-zA-Z_:][a-zA-Z0-9_:]*"
        let label = "[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\\\\\n]|\\\\.)*\""
        let sample = try Regex("^(\(name))(\\{(?:\(label)(?:,\(label))*,?)?\\})? ([-+0-9.eE]+|NaN|\\+Inf|-Inf)$")
        let help = try Regex("^# HELP (\(name)) .*$")
        let type = try Regex("^# TYPE (\(name)) (counter|gauge|histogram|summary|untyped)$")
        #expect(text.hasSuffix("\n"), sourceLocation: sourceLocation)
        for line in text.split(separator: "\n") {
            if let match = line.wholeMatch(of: type) {
                let family = String(match.output[1].substring ?? "")
                #expect(types[family] == nil, "TYPE twice for \(family)", sourceLocation: sourceLocation)
                types[family] = String(match.output[2].substring ?? "")
            } else if line.wholeMatch(of: help) != nil {
                continue
            } else if let match = line.wholeMatch(of: sample) {
                let key = String(match.output[1].substring ?? "") + String(match.output[2].substring ?? "")
                let value = String(match.output[3].substring ?? "")
                #expect(samples[key] == nil, "sample twice: \(key)", sourceLocation: sourceLocation)
                samples[key] = Double(value) ?? .nan
            } else {
                Issue.record("not an exposition line: \(line.debugDescription)", sourceLocation: sourceLocation)
            }
        }
    }
}

func exampleSnapshot(scale: UInt64) -> MetricsSnapshot {
    var snapshot = MetricsSnapshot()
    snapshot.ports = [
        .init(port: "client0", direction: .rx, packets: 10 * scale, bytes: 1500 * scale),
        .init(port: "client0", direction: .tx, packets: 9 * scale, bytes: 1200 * scale),
    ]
    snapshot.comparedPackets = 7 * scale
    snapshot.releasedPackets = 6 * scale
    snapshot.droppedPackets = scale
    snapshot.divergences = [.init(reason: "payload", protocolName: "tcp", count: 2 * scale)]
    snapshot.conntrackEntries = [.init(zone: 0, entries: 3 * scale)]
    snapshot.primaryQueueDepth = 4 * scale
    snapshot.secondaryQueueDepth = 5 * scale
    for _ in 0..<scale { snapshot.releaseLatency.record(nanoseconds: 30_000) }
    snapshot.releaseLatency.record(nanoseconds: 20_000_000_000)
    return snapshot
}

@Suite struct MetricsServerTests {
    @Test func servesValidExpositionAndCountersFollowTheSnapshot() throws {
        let source = SnapshotSource()
        source.set { $0 = exampleSnapshot(scale: 1) }
        let server = try MetricsServer(host: "127.0.0.1", port: 0, provider: source.provider)
        defer { server.stop() }
        #expect(server.port != 0)

        let first = try get("/metrics", port: server.port)
        #expect(first.status == 200)
        #expect(first.head.contains("Content-Type: text/plain; version=0.0.4"))
        let one = try Exposition(first.body)
        #expect(one.types["colo_proxy_packets_total"] == "counter")
        #expect(one.types["colo_proxy_queue_depth"] == "gauge")
        #expect(one.types["colo_proxy_release_latency_seconds"] == "histogram")
        #expect(one.samples[#"colo_proxy_packets_total{port="client0",direction="rx"}"#] == 10)
        #expect(one.samples[#"colo_proxy_bytes_total{port="client0",direction="tx"}"#] == 1200)
        #expect(one.samples["colo_proxy_compared_packets_total"] == 7)
        #expect(one.samples["colo_proxy_released_packets_total"] == 6)
        #expect(one.samples["colo_proxy_dropped_packets_total"] == 1)
        #expect(one.samples[#"colo_proxy_divergences_total{reason="payload",protocol="tcp"}"#] == 2)
        #expect(one.samples[#"colo_proxy_conntrack_entries{zone="0"}"#] == 3)
        #expect(one.samples[#"colo_proxy_queue_depth{side="primary"}"#] == 4)
        #expect(one.samples[#"colo_proxy_queue_depth{side="secondary"}"#] == 5)
        #expect(one.samples[#"colo_proxy_release_latency_seconds_bucket{le="0.00001"}"#] == 0)
        #expect(one.samples[#"colo_proxy_release_latency_seconds_bucket{le="0.00005"}"#] == 1)
        #expect(one.samples[#"colo_proxy_release_latency_seconds_bucket{le="10"}"#] == 1)
        #expect(one.samples[#"colo_proxy_release_latency_seconds_bucket{le="+Inf"}"#] == 2)
        #expect(one.samples["colo_proxy_release_latency_seconds_count"] == 2)
        #expect(one.samples["colo_proxy_release_latency_seconds_sum"] == 20.00003)

        source.set {
            $0 = exampleSnapshot(scale: 3)
            $0.conntrackEntries = [.init(zone: 7, entries: 1)]
        }
        let three = try Exposition(try get("/metrics", port: server.port).body)
        #expect(three.samples[#"colo_proxy_packets_total{port="client0",direction="rx"}"#] == 30)
        #expect(three.samples["colo_proxy_compared_packets_total"] == 21)
        #expect(three.samples[#"colo_proxy_divergences_total{reason="payload",protocol="tcp"}"#] == 6)
        #expect(three.samples[#"colo_proxy_queue_depth{side="primary"}"#] == 12)
        // A zone gone from the snapshot reads 0, the new one its value.
        #expect(three.samples[#"colo_proxy_conntrack_entries{zone="0"}"#] == 0)
        #expect(three.samples[#"colo_proxy_conntrack_entries{zone="7"}"#] == 1)
        #expect(three.samples["colo_proxy_release_latency_seconds_count"] == 4)
        #expect(server.counters.scrapes == 2)
    }

    @Test func otherPathsAndMethodsAreRefused() throws {
        let source = SnapshotSource()
        let server = try MetricsServer(host: "127.0.0.1", port: 0, provider: source.provider)
        defer { server.stop() }
        #expect(try get("/", port: server.port).status == 404)
        #expect(try get("/metricsx", port: server.port).status == 404)
        #expect(try get("/metrics?x=1", port: server.port).status == 200)
        let post = try exchange(port: server.port, Array("POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(post.status == 405)
        #expect(server.counters.rejectedRequests == 3)
    }

    @Test func garbageGets400AndTheServerGoesOn() throws {
        let source = SnapshotSource()
        let server = try MetricsServer(host: "127.0.0.1", port: 0, provider: source.provider)
        defer { server.stop() }
        for garbage in [
            "hello\r\n\r\n", "GET /metrics\r\n\r\n", "GET /metrics HTTP/9\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            #expect(try exchange(port: server.port, Array(garbage.utf8)).status == 400, "\(garbage.debugDescription)")
        }
        #expect(try exchange(port: server.port, [0xFF, 0x00, 0x0A, 0x0A]).status == 400)
        let huge = Array("GET /metrics HTTP/1.1\r\nX: ".utf8) + [UInt8](repeating: 0x41, count: 20_000)
        #expect(try exchange(port: server.port, huge).status == 431)
        #expect(try get("/metrics", port: server.port).status == 200)
    }

    @Test func slowClientsTimeOutAndConnectionsAreBounded() throws {
        var configuration = MetricsServer.Configuration()
        configuration.timeoutMilliseconds = 300
        configuration.maximumConnections = 2
        configuration.log = { _ in }
        let source = SnapshotSource()
        let server = try MetricsServer(
            host: "127.0.0.1", port: 0, configuration: configuration, provider: source.provider)
        defer { server.stop() }
        // Two idle clients fill the table; a third is closed at once without an answer; after the timeout the idle
        // ones are gone and a scrape works again.
        let started = Date()
        let idle = try (0..<2).map { _ in try openIdle(port: server.port) }
        defer { idle.forEach { close($0) } }
        usleep(100_000)
        #expect(throws: TestFailure.self) { try get("/metrics", port: server.port) }
        #expect(server.counters.refusedConnections >= 1)
        usleep(400_000)
        #expect(try get("/metrics", port: server.port).status == 200)
        #expect(server.counters.timedOutConnections == 2)
        #expect(Date().timeIntervalSince(started) < 3)
    }

    @Test("curl scrapes it over IPv4 and IPv6", arguments: ["127.0.0.1", "::1"])
    func curlScrapes(host: String) throws {
        let source = SnapshotSource()
        source.set { $0 = exampleSnapshot(scale: 2) }
        let server = try MetricsServer(host: host, port: 0, provider: source.provider)
        defer { server.stop() }
        let url =
            host.contains(":") ? "http://[\(host)]:\(server.port)/metrics" : "http://\(host):\(server.port)/metrics"
        let result = try Command.run(["curl", "-sS", "--fail", "--max-time", "3", "-g", url])
        #expect(result.succeeded, "\(result)")
        let exposition = try Exposition(result.output)
        #expect(exposition.samples["colo_proxy_released_packets_total"] == 12)
        let missing = try Command.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-g", url + "/x"])
        #expect(missing.output == "404")
    }

    @Test("Dropping the server without stop() stops it and frees the port")
    func deinitStops() throws {
        let source = SnapshotSource()
        var server: MetricsServer? = try MetricsServer(host: "127.0.0.1", port: 0, provider: source.provider)
        let port = try #require(server?.port)
        #expect(try get("/metrics", port: port).status == 200)
        server = nil
        #expect(throws: TestFailure.self) { try get("/metrics", port: port) }
        let again = try MetricsServer(host: "127.0.0.1", port: port, provider: source.provider)
        defer { again.stop() }
        #expect(try get("/metrics", port: port).status == 200)
    }

    @Test func addressesParse() throws {
        #expect(try MetricsServer.parseAddress("127.0.0.1:9100") == ("127.0.0.1", 9100))
        #expect(try MetricsServer.parseAddress("[::1]:0") == ("::1", 0))
        #expect(try MetricsServer.parseAddress(":9100") == ("0.0.0.0", 9100))
        for bad in ["", "9100", "localhost:9100", "1.2.3.4:", "1.2.3.4:65536", "::1:80", "[::1]80", "1.2.3.4:+1"] {
            #expect(throws: MetricsServerError.badAddress(bad), "\(bad)") { try MetricsServer.parseAddress(bad) }
        }
    }

    @Test func histogramRecordsCumulatively() {
        var histogram = LatencyHistogram()
        histogram.record(nanoseconds: 10_000)
        histogram.record(nanoseconds: 10_001)
        histogram.record(nanoseconds: 1_000_000)
        #expect(histogram.cumulativeCounts[0] == 1)
        #expect(histogram.cumulativeCounts[1] == 2)
        #expect(histogram.cumulativeCounts[6] == 3)
        #expect(histogram.cumulativeCounts.last == 3)
        #expect(histogram.count == 3)
        #expect(histogram.sumNanoseconds == 1_020_001)
        #expect(LatencyHistogram(cumulativeCounts: [1, 2], sumNanoseconds: 0, count: 2) == nil)
    }

    @Test("every bound is inclusive: a value at a bound counts in its bucket, one above it in the next")
    func histogramBucketEdges() {
        let bounds = LatencyHistogram.upperBoundsNanoseconds
        for (index, bound) in bounds.enumerated() {
            for (value, expected) in [(bound - 1, index), (bound, index), (bound + 1, index + 1)] {
                var histogram = LatencyHistogram()
                histogram.record(nanoseconds: value)
                // The first cumulative count that includes the observation is its bucket (none: +Inf).
                let bucket = histogram.cumulativeCounts.firstIndex(of: 1) ?? bounds.count
                #expect(bucket == expected, "\(value) ns")
                #expect(histogram.count == 1)
            }
        }
        var huge = LatencyHistogram()
        huge.record(nanoseconds: .max)
        #expect(huge.cumulativeCounts.allSatisfy { $0 == 0 } && huge.count == 1)
        // Built from cumulative counts and read back unchanged.
        let copy = LatencyHistogram(cumulativeCounts: Array(1...19).map(UInt64.init), sumNanoseconds: 5, count: 20)
        #expect(copy?.cumulativeCounts == Array(1...19).map(UInt64.init))
    }
}

func openIdle(port: UInt16) throws -> Int32 {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { throw TestFailure(description: "connect failed") }
    _ = Array("GET /met".utf8).withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    return descriptor
}
