import ColoConntrack
import ColoLab
import ColoRuntime
import ColoStages
import ColoTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The proxy between real Linux stacks: a client namespace and two replica namespaces (clones) on TAP ports.
@Suite("COLO proxy on real stacks (TAP lab)", .serialized)
struct TapProxyLabTests {
    @Test("Identical replicas: parallel keep-alive downloads byte-exact, no divergence, offsets learned")
    func identical() throws {
        guard requireRoot("the lab builds network namespaces and TAP devices") else { return }
        let lab = try ColoLab("ident")
        defer { lab.close() }
        for index in 0..<8 {
            try writePattern(lab.web.path + "/f\(index).bin", count: 60_000 + index * 7_000, seed: 42)
        }
        try lab.serve(lab.web.path, in: lab.namespaces.primary)
        try lab.serve(lab.web.path, in: lab.namespaces.secondary)
        let downloads = try TemporaryDirectory()
        // 4 connections in parallel, each fetching all 8 files over one keep-alive connection (32 requests).
        var script = ""
        for connection in 0..<4 {
            let urls = (0..<8).map { "http://10.10.0.2:8000/f\($0).bin -o \(downloads.path)/c\(connection)-f\($0).bin" }
            script += "curl -sf --max-time 30 \(urls.joined(separator: " ")) & "
        }
        script += "wait"
        let result = try lab.client(["/bin/sh", "-c", script], timeout: 60)
        #expect(result.succeeded, "downloads: \(result)")
        for connection in 0..<4 {
            for index in 0..<8 {
                let got = FileManager.default.contents(atPath: "\(downloads.path)/c\(connection)-f\(index).bin")
                let want = FileManager.default.contents(atPath: "\(lab.web.path)/f\(index).bin")
                #expect(got != nil && got == want, "connection \(connection) file \(index) byte-exact")
            }
        }
        let stats =
            lab.proxy.perform { proxy in
                "store full \(proxy.counters.storeFull), write refused \(proxy.counters.writeRefused), mirror refused "
                    + "\(proxy.pipeline.mirrorRefused), in \(proxy.counters.framesIn), out \(proxy.counters.framesOut)"
            } ?? ""
        #expect(lab.events.all.isEmpty, "no divergence: \(lab.events.all.map(\.summary)); \(stats)")
        let offsets =
            lab.proxy.perform { proxy -> [UInt32] in
                var found: [UInt32] = []
                proxy.pipeline.tracker.forEachEntry { handle, entry in
                    if entry.key.zone == ColoPipeline.secondaryZone, entry.key.protocolNumber == 6,
                        let offset = proxy.pipeline.rewriter.offset(of: handle)
                    {
                        found.append(offset)
                    }
                }
                return found
            } ?? []
        #expect(offsets.count >= 4, "every TCP connection has a learned offset: \(offsets)")
        #expect(offsets.contains { $0 != 0 }, "the replicas' ISNs differ, so some offset is non-zero")
    }

    @Test(
        "Diverging content: one event on that connection at the right stream offset; the client gets the primary's bytes"
    )
    func diverging() throws {
        guard requireRoot("the lab builds network namespaces and TAP devices") else { return }
        let lab = try ColoLab("diverge")
        defer { lab.close() }
        let primaryDirectory = try TemporaryDirectory()
        let secondaryDirectory = try TemporaryDirectory()
        try writePattern(primaryDirectory.path + "/page.bin", count: 50_000, seed: 7)
        var other = try Data(contentsOf: URL(fileURLWithPath: primaryDirectory.path + "/page.bin"))
        other[10_000] ^= 0x55
        try other.write(to: URL(fileURLWithPath: secondaryDirectory.path + "/page.bin"))
        try lab.serve(primaryDirectory.path, in: lab.namespaces.primary)
        try lab.serve(secondaryDirectory.path, in: lab.namespaces.secondary)
        let downloads = try TemporaryDirectory()
        let result = try lab.client([
            "curl", "-sf", "--max-time", "30", "-D", downloads.path + "/headers", "-o", downloads.path + "/page.bin",
            "http://10.10.0.2:8000/page.bin",
        ])
        #expect(result.succeeded, "download: \(result)")
        #expect(
            FileManager.default.contents(atPath: downloads.path + "/page.bin")
                == FileManager.default.contents(atPath: primaryDirectory.path + "/page.bin"),
            "the client receives the primary's bytes")
        let headerLength = FileManager.default.contents(atPath: downloads.path + "/headers")?.count ?? 0
        let events = lab.events.all
        #expect(events.count == 1, "\(events.map(\.summary))")
        #expect(events.first?.reason == .payload && events.first?.sourcePort == 8000)
        #expect(events.first?.streamOffset == UInt64(headerLength + 10_000), "headers \(headerLength) + body offset")
    }

    @Test("Failover in the middle of a download: it completes intact; new connections work afterwards")
    func failover() throws {
        guard requireRoot("the lab builds network namespaces and TAP devices") else { return }
        let lab = try ColoLab("failover")
        defer { lab.close() }
        try writePattern(lab.web.path + "/big.bin", count: 20_000_000, seed: 9)
        try lab.serve(lab.web.path, in: lab.namespaces.primary)
        try lab.serve(lab.web.path, in: lab.namespaces.secondary)
        let downloads = try TemporaryDirectory()
        let target = downloads.path + "/big.bin"
        // A rate-limited download, so the failover lands in its middle.
        let download = Thread {
            _ = try? lab.client(
                [
                    "curl", "-sf", "--max-time", "60", "--limit-rate", "8M", "-o", target,
                    "http://10.10.0.2:8000/big.bin",
                ], timeout: 70)
        }
        download.start()
        usleep(800_000)
        lab.proxy.perform { $0.failover() }
        _ = try Command.run(["ip", "-n", lab.namespaces.primary, "link", "set", "lo", "down"])
        let primaryDevice = lab.proxy.primary.name
        _ = try Command.run(["ip", "-n", lab.namespaces.primary, "link", "set", primaryDevice, "down"])
        var waited = 0
        while !download.isFinished && waited < 700 {
            usleep(100_000)
            waited += 1
        }
        let got = FileManager.default.contents(atPath: downloads.path + "/big.bin")
        let want = FileManager.default.contents(atPath: lab.web.path + "/big.bin")
        #expect(got?.count == want?.count, "the download completed: \(got?.count ?? 0) of \(want?.count ?? 0) bytes")
        #expect(got == want, "byte-exact after failover")
        let after = try lab.client([
            "curl", "-sf", "--max-time", "10", "-o", "/dev/null", "http://10.10.0.2:8000/big.bin",
        ])
        #expect(after.succeeded, "a new connection after failover: \(after)")
    }
}
