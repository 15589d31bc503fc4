import ArgumentParser
import ColoLab
import ColoStages
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `colo-proxy demo`: builds the single-host lab (LAB.md), runs the proxy in-process between a client namespace
/// and two cloned replicas with real web servers, drives real clients (curl) and tells in plain words what the
/// proxy compared, rewrote, caught and survived.
public struct DemoCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the COLO proxy in a namespace lab with real servers and clients, and explain what it does.",
        discussion: """
            Needs root: it creates network namespaces (client, primary, secondary) and TAP devices. Scenarios: \
            identical (200 requests over 20 keep-alive connections to identical replicas), diverge (the \
            secondary serves a different byte), failover (the primary is lost in the middle of a 50 MB \
            download). Ctrl-C removes the lab; --keep leaves the last scenario's namespaces in place.
            """
    )

    @Option(name: .long, help: "identical, diverge, failover or all.")
    public var scenario: String = "all"

    @Flag(name: .long, help: "Use IPv6 between the client and the replicas.")
    public var ipv6 = false

    @Flag(
        name: .long,
        help: "Let the TAP devices offer checksum and TCP segmentation offload (the proxy compares 64 KiB segments).")
    public var offload = false

    @Flag(name: .long, help: "Keep the last scenario's lab running until Ctrl-C and leave its namespaces.")
    public var keep = false

    public init() {}

    public func validate() throws {
        guard DemoScenario.parse(scenario) != nil else {
            throw ValidationError("--scenario: bad value '\(scenario)' (accepted: identical, diverge, failover, all)")
        }
    }

    public func run() throws {
        guard geteuid() == 0 else {
            print("colo-proxy demo: needs root (it creates network namespaces and TAP devices); run it with sudo")
            throw ExitCode(2)
        }
        let scenarios = DemoScenario.parse(scenario) ?? []
        // SIGINT and SIGTERM are turned into a byte on a pipe (the only thing a handler may safely do); a thread
        // waiting on it removes the lab and exits. (Blocking the signals instead is not enough: threads the
        // runtime started before this point would still take them and die with the default action.)
        let runner = DemoRunner(ipv6: ipv6, offload: offload)
        var descriptors: [Int32] = [-1, -1]
        guard pipe(&descriptors) == 0 else {
            print("colo-proxy demo: pipe: \(String(cString: strerror(errno)))")
            throw ExitCode(2)
        }
        demoSignalPipe = descriptors[1]
        let readEnd = descriptors[0]
        for number in [SIGINT, SIGTERM] {
            signal(number) { received in
                var byte = UInt8(truncatingIfNeeded: received)
                _ = write(demoSignalPipe, &byte, 1)
            }
        }
        let waiter = Thread {
            var byte: UInt8 = 0
            while read(readEnd, &byte, 1) < 0 && errno == EINTR {}
            runner.interrupted(signal: Int32(byte))
        }
        waiter.start()
        let results = runner.run(scenarios, keepLast: keep)
        if keep, let lab = runner.keptLab {
            writeOut("\n")
            writeOut("The lab stays up; the proxy keeps running until Ctrl-C. Enter the namespaces with:\n")
            for namespace in lab.allNamespaces { writeOut("  sudo ip netns exec \(namespace) bash\n") }
            writeOut(
                "  e.g. sudo ip netns exec \(lab.namespaces.client) curl http://\(ColoLab.urlHost(ipv6: ipv6)):8000/\n")
            writeOut("Afterwards remove them with: sudo ip netns del <name> (for each of the three)\n")
            while true { pause() }
        }
        if !results.allSatisfy(\.passed) { throw ExitCode(1) }
    }
}

/// Writes to stdout unbuffered (the demo's progress line and report).
public func writeOut(_ text: String) {
    var text = text
    text.withUTF8 { bytes in
        guard let base = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            let written = write(1, base + done, bytes.count - done)
            if written <= 0 { return }
            done += written
        }
    }
}

/// The write end of the demo's signal pipe (set once, before the handlers are installed).
nonisolated(unsafe) var demoSignalPipe: Int32 = -1

/// A demo scenario.
public enum DemoScenario: String, CaseIterable, Sendable {
    case identical, diverge, failover

    public static func parse(_ text: String) -> [DemoScenario]? {
        if text == "all" { return allCases }
        return DemoScenario(rawValue: text).map { [$0] }
    }
}

/// What one scenario found.
public struct DemoResult: Sendable {
    public var scenario: DemoScenario
    public var passed: Bool
    /// The checks that failed, in plain words.
    public var failures: [String]
    /// The one-line outcome for the summary.
    public var summary: String
}

/// Runs the demo's scenarios and prints what happens (the command and the integration test use it).
public final class DemoRunner: @unchecked Sendable {
    public let ipv6: Bool
    public let offload: Bool
    private let output: @Sendable (String) -> Void
    private let current = Mutex<ColoLab?>(nil)
    public private(set) var keptLab: ColoLab?
    private let isTerminal = isatty(1) != 0

    public init(
        ipv6: Bool, offload: Bool = false, output: @escaping @Sendable (String) -> Void = { writeOut($0 + "\n") }
    ) {
        self.ipv6 = ipv6
        self.offload = offload
        self.output = output
    }

    private var host: String { ColoLab.urlHost(ipv6: ipv6) }

    /// Runs `scenarios` one lab each and prints the summary. With `keepLast` the last lab is left running.
    public func run(_ scenarios: [DemoScenario], keepLast: Bool = false) -> [DemoResult] {
        var results: [DemoResult] = []
        for (index, scenario) in scenarios.enumerated() {
            output("")
            output("== scenario \(scenario.rawValue)\(ipv6 ? " (IPv6)" : "")\(offload ? " (TAP offloads on)" : "")")
            let result: DemoResult
            do {
                let lab = try ColoLab("demo\(index)", offload: offload)
                current.withLock { $0 = lab }
                result = try run(scenario, in: lab)
                if keepLast && index == scenarios.count - 1 {
                    lab.keep = true
                    keptLab = lab
                } else {
                    current.withLock { $0 = nil }
                    lab.close()
                }
            } catch {
                current.withLock { $0 = nil }
                result = DemoResult(
                    scenario: scenario, passed: false, failures: ["lab: \(error)"], summary: "could not run: \(error)")
            }
            for failure in result.failures { output("  FAILED: \(failure)") }
            results.append(result)
        }
        output("")
        output("== summary")
        for result in results {
            output("  \(result.passed ? "ok    " : "FAILED") \(result.scenario.rawValue): \(result.summary)")
        }
        let failed = results.filter { !$0.passed }.count
        output(failed == 0 ? "demo: every scenario passed" : "demo: \(failed) scenario(s) failed")
        return results
    }

    /// Signal-time cleanup: kill the servers, delete the namespaces (unless kept) and exit.
    func interrupted(signal: Int32) {
        output("")
        let lab = current.withLock { $0 }
        output(
            "demo: interrupted (signal \(signal)); \(lab?.keep == true ? "namespaces left in place" : "removing the lab")"
        )
        if let lab {
            if lab.keep { lab.close() } else { lab.emergencyCleanup() }
        }
        exit(128 + signal)
    }

    private func run(_ scenario: DemoScenario, in lab: ColoLab) throws -> DemoResult {
        switch scenario {
        case .identical: return try identical(lab)
        case .diverge: return try diverge(lab)
        case .failover: return try failover(lab)
        }
    }

    // MARK: Scenarios

    private func identical(_ lab: ColoLab) throws -> DemoResult {
        var failures: [String] = []
        output("Both replicas serve the same 10 files. The client opens 20 keep-alive connections in parallel and")
        output("fetches every file on each (200 requests). The proxy mirrors each request to the secondary, shifts")
        output("the secondary's TCP sequence numbers onto the primary's, and compares both answers byte by byte.")
        try lab.serveIdenticalFiles()
        let (result, exact) = try lab.fetchEveryFile(ipv6: ipv6) { fetch in
            try progress(lab, "200 requests over 20 connections", fetch)
        }
        if !result.succeeded { failures.append("a download failed: \(result)") }
        if exact != 200 { failures.append("only \(exact) of 200 responses were byte-exact") }
        usleep(200_000)
        let counters = lab.compareCounters()
        describe(counters)
        output("  the client got \(exact) of 200 responses byte-exact")
        if offload {
            let large = lab.portCounters().largeFramesIn
            output("  \(large) frames of more than 2 KiB came through the TAPs (TCP segmentation offload)")
            if large == 0 { failures.append("offloads on, but every frame read was MTU-sized") }
        }
        let offsets = lab.queriedOffsets()
        output("  the rewriter kept \(offsets.count) TCP connection offset(s) (query-connections), e.g.:")
        for row in offsets.prefix(5) { output("    \(row.connection)  offset \(row.offset)") }
        if !offsets.contains(where: { $0.offset != 0 }) {
            failures.append("no connection with a non-zero rewriter offset in query-connections")
        }
        let events = lab.events.all
        output("  divergence events: \(events.count)")
        for event in events.prefix(3) { output("    \(event.summary)") }
        if !events.isEmpty { failures.append("\(events.count) divergence event(s) between identical replicas") }
        return DemoResult(
            scenario: .identical, passed: failures.isEmpty, failures: failures,
            summary: "identical traffic matched: \(exact)/200 responses byte-exact, \(counters.bytesCompared) bytes "
                + "compared, \(events.count) divergences")
    }

    private func diverge(_ lab: ColoLab) throws -> DemoResult {
        var failures: [String] = []
        output("The secondary serves a page whose byte 10000 differs from the primary's. The client downloads it.")
        let page = try DivergingPage(serving: lab)
        let downloads = try LabDirectory()
        let result = try progress(lab, "downloading page.bin") {
            try lab.client([
                "curl", "-sf", "--max-time", "30", "-D", downloads.path + "/headers", "-o",
                downloads.path + "/page.bin", "http://\(host):8000/page.bin",
            ])
        }
        if !result.succeeded { failures.append("the download failed: \(result)") }
        usleep(200_000)
        describe(lab.compareCounters())
        let headerLength = FileManager.default.contents(atPath: downloads.path + "/headers")?.count ?? 0
        let expected = UInt64(headerLength + 10_000)
        let events = lab.events.all
        output("  divergence events: \(events.count)")
        for event in events.prefix(3) { output("    \(event.summary)") }
        if let event = events.first {
            output(
                "  caught at stream offset \(event.streamOffset.map(String.init) ?? "?") of the server's byte stream "
                    + "(\(headerLength) header bytes + body byte 10000 = \(expected))")
        }
        if events.count != 1 { failures.append("expected exactly one divergence event, got \(events.count)") }
        if let event = events.first, event.streamOffset != expected || event.sourcePort != 8000 {
            failures.append(
                "the event is at offset \(event.streamOffset ?? 0) port \(event.sourcePort ?? 0), "
                    + "expected offset \(expected) port 8000")
        }
        let gotPrimary =
            FileManager.default.contents(atPath: downloads.path + "/page.bin")
            == FileManager.default.contents(atPath: page.primaryPath)
        output("  the client received \(gotPrimary ? "the primary's bytes" : "bytes that are NOT the primary's")")
        if !gotPrimary { failures.append("the client did not get the primary's bytes") }
        return DemoResult(
            scenario: .diverge, passed: failures.isEmpty, failures: failures,
            summary: "divergence caught: \(events.count) event at stream offset "
                + "\(events.first?.streamOffset.map(String.init) ?? "-"); the client got the primary's bytes")
    }

    private func failover(_ lab: ColoLab) throws -> DemoResult {
        var failures: [String] = []
        let size = 50_000_000
        output("Both replicas serve a 50 MB file. In the middle of its download the primary is declared lost")
        output("(x-colo-lost-heartbeat) and its link is taken down; the secondary carries on the same connection.")
        try writePattern(lab.web.path + "/big.bin", count: size, seed: 9)
        try writePattern(lab.web.path + "/small.bin", count: 100_000, seed: 3)
        let want = try sha256(ofFile: lab.web.path + "/big.bin")
        try lab.serve(lab.web.path, in: lab.namespaces.primary)
        try lab.serve(lab.web.path, in: lab.namespaces.secondary)
        let downloads = try LabDirectory()
        let target = downloads.path + "/big.bin"
        // A capture in the client's namespace, to show that the client never saw a reset.
        let capture = downloads.path + "/client.pcap"
        let tcpdump = try LabShell.start([
            "ip", "netns", "exec", lab.namespaces.client, "tcpdump", "-U", "-s", "96", "-i", lab.proxy.client.name,
            "-w", capture, "tcp",
        ])
        usleep(300_000)
        let outcome = Mutex<LabResult?>(nil)
        let download = Thread {
            let result = try? lab.client(
                [
                    "curl", "-sf", "--max-time", "60", "--limit-rate", "25M", "-o", target,
                    "http://\(self.host):8000/big.bin",
                ],
                timeout: 70)
            outcome.withLock { $0 = result }
        }
        download.start()
        var partial = 0
        for _ in 0..<100 {
            usleep(50_000)
            partial = (try? FileManager.default.attributesOfItem(atPath: target)[.size] as? Int) ?? 0
            if partial >= size / 3 { break }
        }
        output("  \(partial / 1_000_000) MB received; sending x-colo-lost-heartbeat")
        let heartbeat = lab.command("x-colo-lost-heartbeat")
        if case .failure(let error) = heartbeat { failures.append("x-colo-lost-heartbeat: \(error)") }
        try lab.takePrimaryDown()
        output("  the primary's link is down; the download continues from the secondary")
        progress(lab, "finishing the download") {
            var waited = 0
            while !download.isFinished && waited < 800 {
                usleep(100_000)
                waited += 1
            }
        }
        let result = outcome.withLock { $0 }
        if result?.succeeded != true {
            failures.append("curl did not finish cleanly: \(result.map { "\($0)" } ?? "no result")")
        }
        kill(tcpdump, SIGINT)
        var status: Int32 = 0
        waitpid(tcpdump, &status, 0)
        let resets = try LabShell.run(
            [
                "tcpdump", "-nn", "-r", capture,
                // IPv6 with no extension headers: the TCP flags byte is at 40 + 13.
                ipv6 ? "ip6 and ip6[6] = 6 and ip6[53] & 4 != 0" : "tcp[tcpflags] & tcp-rst != 0",
            ], timeout: 30)
        let resetCount = resets.output.split(separator: "\n").filter { $0.contains(" Flags [R") }.count
        // The capture must hold the transfer, or "no reset" would mean nothing.
        let captured = try LabShell.run(["tcpdump", "-nn", "-r", capture, "-c", "5"], timeout: 30)
        if !resets.succeeded || !captured.succeeded || !captured.output.contains("Flags") {
            failures.append("the client-side capture could not be read: \(resets) \(captured)")
        }
        output("  TCP resets seen by the client: \(resetCount)")
        if resetCount != 0 { failures.append("the client saw \(resetCount) TCP reset(s): \(resets.output)") }
        let got = (try? sha256(ofFile: target)) ?? "missing"
        output("  sha256 sent     \(want)")
        output("  sha256 received \(got)")
        if got != want { failures.append("the checksum does not match") }
        let fresh = try lab.client(
            [
                "curl", "-sf", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}",
                "http://\(host):8000/small.bin",
            ], timeout: 30)
        output("  a new connection after failover: \(fresh.succeeded ? "HTTP \(fresh.output)" : "failed")")
        if !fresh.succeeded { failures.append("a new connection after failover failed: \(fresh)") }
        return DemoResult(
            scenario: .failover, passed: failures.isEmpty, failures: failures,
            summary: "failover transfer completed with \(got == want ? "the right" : "a WRONG") checksum, "
                + "\(resetCount) resets; new connections \(fresh.succeeded ? "work" : "FAIL")")
    }

    // MARK: Output

    private func describe(_ counters: CompareCounters) {
        output(
            "  compared: \(counters.connectionsCompared) connection(s), \(counters.primaryPackets) primary and "
                + "\(counters.secondaryPackets) secondary packets, \(counters.bytesCompared) payload bytes; "
                + "\(counters.released) packets released to the client, \(counters.retransmissions) retransmissions")
    }

    /// Runs `work` while a progress line shows the comparer's running totals (on a terminal; else one line).
    @discardableResult
    private func progress<T>(_ lab: ColoLab, _ label: String, _ work: () throws -> T) rethrows -> T {
        guard isTerminal else {
            output("  … \(label)")
            return try work()
        }
        let running = Atomic<Bool>(true)
        let ticker = Thread {
            let spinner = Array("|/-\\")
            var tick = 0
            while running.load(ordering: .acquiring) {
                let counters = lab.compareCounters()
                let line =
                    "\r  \(spinner[tick % 4]) \(label): \(counters.primaryPackets + counters.secondaryPackets) "
                    + "packets, \(counters.bytesCompared / 1000) kB compared   "
                writeOut(line)
                tick += 1
                usleep(200_000)
            }
        }
        ticker.start()
        defer {
            running.store(false, ordering: .releasing)
            while !ticker.isFinished { usleep(10_000) }
            writeOut("\r\u{1B}[K")
        }
        return try work()
    }
}
