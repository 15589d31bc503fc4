import ColoCLI
import ColoControl
import ColoLab
import ColoStages
import ColoTestSupport
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Collects the demo's report lines.
private final class Lines: @unchecked Sendable {
    let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var text: String { lines.withLock { $0.joined(separator: "\n") } }
}

/// The issue-6 lab scenarios on real stacks: the demo's scenarios (200 requests over 20 keep-alive connections,
/// a diverging byte, failover in a 50 MB download with no reset) over IPv4 and IPv6, UDP and ICMP through the
/// proxy, and a checkpoint round.
@Suite("Lab scenarios (demo, datagrams, checkpoint)", .serialized)
struct LabScenarioTests {
    @Test(
        "colo-proxy demo --scenario all, over IPv4 and IPv6: every scenario passes and the summary says so",
        arguments: [false, true])
    func demo(ipv6: Bool) throws {
        guard requireRoot("the demo builds network namespaces and TAP devices") else { return }
        let lines = Lines()
        let results = DemoRunner(ipv6: ipv6, output: { lines.append($0) }).run(DemoScenario.allCases)
        let report = lines.text
        #expect(results.map(\.scenario) == DemoScenario.allCases)
        for result in results { #expect(result.passed, "\(result.scenario): \(result.failures)\n\(report)") }
        #expect(report.contains("200/200 responses byte-exact"), "\(report)")
        #expect(report.contains("0 divergences"))
        #expect(report.contains("divergence caught: 1 event at stream offset"))
        #expect(report.contains("failover transfer completed with the right checksum, 0 resets"))
        #expect(report.hasSuffix("demo: every scenario passed"))
        // The lab is gone afterwards.
        let namespaces = try Command.run(["ip", "netns", "list"]).output
        #expect(!namespaces.contains("demo0-\(getpid() % 100_000)"), "\(namespaces)")
    }

    @Test(
        "demo --offload diverge and failover, IPv4 and IPv6: offset caught in 64 KiB segments, failover intact",
        arguments: [false, true])
    func demoWithOffloads(ipv6: Bool) throws {
        guard requireRoot("the demo builds network namespaces and TAP devices") else { return }
        let lines = Lines()
        let results = DemoRunner(ipv6: ipv6, offload: true, output: { lines.append($0) }).run([.diverge, .failover])
        let report = lines.text
        for result in results { #expect(result.passed, "\(result.scenario): \(result.failures)\n\(report)") }
        #expect(report.contains("divergence caught: 1 event at stream offset"), "\(report)")
        #expect(report.contains("failover transfer completed with the right checksum, 0 resets"))
    }

    @Test(
        "Identical replicas with TAP offloads: 200 responses byte-exact, 64 KiB segments, never a byte difference")
    func identicalWithOffloads() throws {
        guard requireRoot("the lab builds network namespaces and TAP devices") else { return }
        let lab = try ColoLab("offl", offload: true)
        defer { lab.close() }
        try lab.serveIdenticalFiles()
        let (result, exact) = try lab.fetchEveryFile()
        #expect(result.succeeded, "\(result)")
        #expect(exact == 200)
        usleep(200_000)
        #expect(lab.portCounters().largeFramesIn > 0, "segments larger than an MTU came through")
        #expect(lab.compareCounters().bytesCompared > 10_000_000)
        #expect(lab.queriedOffsets().contains { $0.offset != 0 })
        // Byte differences, length or protocol mismatches and overflows would be real faults. A secondary that
        // falls more than compare_timeout behind on this loaded 2-core CI machine (debug build, other lab
        // suites running at once) is reported as secondary-timeout: the proxy's correct answer to a lagging
        // replica, seen here in about one run in five, and only with offloads.
        let events = lab.events.all
        #expect(events.allSatisfy { $0.reason == .secondaryTimeout }, "\(events.map(\.summary))")
        #expect(events.count <= 3, "\(events.map(\.summary))")
    }

    @Test("UDP request/response and ICMP echo through the proxy: compared, matched and released")
    func datagrams() throws {
        guard requireRoot("the lab builds network namespaces and TAP devices") else { return }
        let lab = try ColoLab("dgram")
        defer { lab.close() }
        try lab.serveUDPEcho(in: lab.namespaces.primary)
        try lab.serveUDPEcho(in: lab.namespaces.secondary)
        let before = lab.compareCounters()
        let udp = try lab.client(
            [
                "python3", "-c",
                """
                import socket
                for family, host in ((socket.AF_INET, '\(ColoLab.replicaV4)'), (socket.AF_INET6, '\(ColoLab.replicaV6)')):
                    s = socket.socket(family, socket.SOCK_DGRAM)
                    s.settimeout(3)
                    for i in range(5):
                        s.sendto(b'ping %d' % i, (host, 9000))
                        print(s.recvfrom(100)[0].decode())
                """,
            ], timeout: 40)
        #expect(udp.succeeded, "\(udp)")
        #expect(udp.output.contains("echo:ping 4"), "\(udp.output)")
        let ping = try lab.client(["ping", "-c", "3", "-i", "0.2", "-W", "2", ColoLab.replicaV4])
        #expect(ping.succeeded && ping.output.contains("3 received"), "\(ping)")
        let ping6 = try lab.client(["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", ColoLab.replicaV6])
        #expect(ping6.succeeded && ping6.output.contains("3 received"), "\(ping6)")
        let after = lab.compareCounters()
        // 10 UDP answers and 6 echo replies, each matched against the secondary's (neighbour discovery and ARP
        // may add a few more).
        #expect(after.datagramsMatched - before.datagramsMatched >= 16, "\(after)")
        #expect(lab.events.all.isEmpty, "\(lab.events.all.map(\.summary))")
    }

    @Test("Checkpoint round: a divergence holds the connection; colo-checkpoint-done releases it; offsets are zero")
    func checkpoint() throws {
        guard requireRoot("the lab builds network namespaces and TAP devices") else { return }
        var compare = CompareConfiguration()
        compare.onDivergence = .checkpoint
        let lab = try ColoLab("ckpt", compare: compare)
        defer { lab.close() }
        let page = try DivergingPage(serving: lab)
        let downloads = try LabDirectory()
        let outcome = Mutex<LabResult?>(nil)
        let download = Thread {
            let result = try? lab.client([
                "curl", "-sf", "--max-time", "20", "-D", downloads.path + "/headers", "-o",
                downloads.path + "/page.bin", "http://\(ColoLab.replicaV4):8000/page.bin",
            ])
            outcome.withLock { $0 = result }
        }
        download.start()
        var waited = 0
        while lab.events.all.isEmpty && waited < 100 {
            usleep(50_000)
            waited += 1
        }
        let held = lab.proxy.perform { $0.pipeline.comparer.queuedPackets.primary } ?? 0
        #expect(!lab.events.all.isEmpty, "the divergence was reported")
        #expect(held > 0, "the primary's packets after the divergence are held")
        #expect(!download.isFinished, "the client waits while the connection is held")
        // The controller checkpoints and says so (more divergences may follow: the lab's secondary is not
        // really made a copy of the primary, so each is answered with another checkpoint).
        var rounds = 0
        while !download.isFinished && rounds < 100 {
            if case .failure(let error) = lab.command("colo-checkpoint-done") {
                Issue.record("colo-checkpoint-done: \(error)")
                break
            }
            rounds += 1
            usleep(100_000)
        }
        while !download.isFinished { usleep(50_000) }
        let result = outcome.withLock { $0 }
        #expect(result?.succeeded == true, "\(String(describing: result))")
        #expect(
            FileManager.default.contents(atPath: downloads.path + "/page.bin")
                == FileManager.default.contents(atPath: page.primaryPath),
            "the client got the primary's bytes")
        let events = lab.events.all
        let headerLength = FileManager.default.contents(atPath: downloads.path + "/headers")?.count ?? 0
        #expect(events.first?.action == .checkpoint)
        #expect(events.first?.streamOffset == UInt64(headerLength + 10_000))
        _ = lab.command("colo-checkpoint-done")
        let counters = lab.compareCounters()
        #expect(counters.checkpoints >= 1)
        // The connection's last packets (FIN, ACKs) may still arrive and wait for the diverged secondary; a
        // checkpoint releases whatever is held at that moment, so flush and read the queue in one data-thread turn.
        let left = lab.proxy.perform { proxy -> Int in
            proxy.checkpointDone()
            return proxy.pipeline.comparer.queuedPackets.primary
        }
        #expect(left == 0, "held \(held) were released")
        let offsets = lab.queriedOffsets()
        #expect(offsets.allSatisfy { $0.offset == 0 }, "offsets after the checkpoint: \(offsets)")
    }
}
