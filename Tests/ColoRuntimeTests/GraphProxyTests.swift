import ColoCLI
import ColoCapture
import ColoControl
import ColoMetrics
import ColoPacket
import ColoPacketBuilder
import ColoRuntime
import ColoStages
import ColoTestSupport
import Foundation
import Synchronization
import Testing

final class EventList: @unchecked Sendable {
    private let lock = Mutex<[DivergenceEvent]>([])
    func append(_ event: DivergenceEvent) { lock.withLock { $0.append(event) } }
    var count: Int { lock.withLock { $0.count } }
    var all: [DivergenceEvent] { lock.withLock { $0 } }
}

/// A `GraphProxy` on memory ports, running on its own thread as in the daemon.
final class GraphHarness: @unchecked Sendable {
    let ports: [String: MemoryPort]
    let proxy: GraphProxy
    let events = EventList()
    private let thread: Thread

    init(
        ports portTexts: [String], objects objectTexts: [String],
        configuration: GraphProxy.Configuration = GraphProxy.Configuration()
    ) throws {
        let specs = try portTexts.map { try PortSpec.parse($0) }
        let objects = try objectTexts.map { try ObjectSpec.parse($0) }
        let memory = specs.map { MemoryPort($0.id, linkType: $0.kind == .tun ? .rawIP : .ethernet) }
        ports = Dictionary(uniqueKeysWithValues: memory.map { ($0.id, $0) })
        proxy = try GraphProxy(ports: memory, portSpecs: specs, objects: objects, configuration: configuration)
        let events = self.events
        proxy.onDivergence = { event in events.append(event) }
        let proxy = self.proxy
        thread = Thread { proxy.run() }
        thread.start()
    }

    func stop() { proxy.stop() }

    /// Waits until `condition` holds (up to 2 s).
    func wait(_ condition: () -> Bool) -> Bool {
        for _ in 0..<400 {
            if condition() { return true }
            usleep(5000)
        }
        return condition()
    }

    func sent(_ id: String) -> [[UInt8]] { ports[id]?.sent ?? [] }
}

func udp(_ payload: String, from: UInt8 = 2, to: UInt8 = 1, port: UInt16 = 53) -> [UInt8] {
    PacketBuilder.build(
        .ipv4(
            IPv4Spec(source: IPv4Address(10, 10, 0, from), destination: IPv4Address(10, 10, 0, to)),
            .udp(UDPSpec(sourcePort: port, destinationPort: 5000, payload: Array(payload.utf8)))))
}

func tcp(
    _ flags: TCPFlags, seq: UInt32, ack: UInt32 = 0, payload: String = "", fromClient: Bool
) -> [UInt8] {
    let client = IPv4Address(10, 10, 0, 1)
    let server = IPv4Address(10, 10, 0, 2)
    let spec = TCPSpec(
        sourcePort: fromClient ? 40000 : 80, destinationPort: fromClient ? 80 : 40000, sequenceNumber: seq,
        acknowledgmentNumber: ack, flags: flags, payload: Array(payload.utf8))
    return PacketBuilder.tcp4(
        spec,
        ip: fromClient ? IPv4Spec(source: client, destination: server) : IPv4Spec(source: server, destination: client))
}

@Suite("GraphProxy: --port/--object chains")
struct GraphProxyTests {
    static let comparePorts = [
        "socket,id=pin,path=/tmp/x1,server=on", "socket,id=sin,path=/tmp/x2,server=on",
        "socket,id=out,path=/tmp/x3,server=on",
    ]

    @Test(
        "standalone colo-compare: equal datagrams release the primary's once; unequal ones time out, released with an event"
    )
    func standaloneCompare() throws {
        let lab = try GraphHarness(
            ports: Self.comparePorts,
            objects: [
                "colo-compare,id=cmp,primary_in=pin,secondary_in=sin,outdev=out,compare_timeout=200,expired_scan_cycle=50"
            ])
        defer { lab.stop() }
        let reply = udp("answer")
        lab.ports["pin"]?.push(reply)
        #expect(lab.sent("out").isEmpty)
        lab.ports["sin"]?.push(reply)
        #expect(lab.wait { lab.sent("out").count == 1 })
        #expect(lab.sent("out").first == reply)

        let primary = udp("primary says", port: 54)
        lab.ports["pin"]?.push(primary)
        lab.ports["sin"]?.push(udp("second says", port: 54))
        #expect(lab.wait { lab.sent("out").count == 2 })
        #expect(lab.sent("out").last == primary)
        #expect(lab.wait { lab.events.count == 1 })
        #expect(lab.sent("pin").isEmpty && lab.sent("sin").isEmpty)
    }

    @Test("one replica far ahead: its port is paused before the store fills; nothing discarded, all released in order")
    func storePressurePausesTheLeadingSide() throws {
        var configuration = GraphProxy.Configuration()
        configuration.storeBuffers = 256
        let lab = try GraphHarness(
            ports: Self.comparePorts, objects: ["colo-compare,id=cmp,primary_in=pin,secondary_in=sin,outdev=out"],
            configuration: configuration)
        defer { lab.stop() }
        let frames = (0..<1000).map { udp("datagram \($0)") }
        for frame in frames { lab.ports["pin"]?.push(frame) }
        // The primary's port is read until the store is ¾ full of its queued frames, then left alone.
        #expect(lab.wait { (lab.proxy.perform { $0.pausedTurns } ?? 0) > 0 })
        usleep(100_000)
        #expect(lab.sent("out").isEmpty)
        for frame in frames { lab.ports["sin"]?.push(frame) }
        #expect(lab.wait { lab.sent("out").count == 1000 })
        let inOrder = lab.sent("out") == frames  // (a Bool: a failure should not print 1000 frames)
        #expect(inOrder, "the primary's frames, in order")
        #expect(lab.ports["pin"]?.portCounters.storeFull == 0)
        #expect(lab.ports["sin"]?.portCounters.storeFull == 0)
        #expect(lab.events.count == 0)
    }

    @Test("a side that leads by leadLimit packets is not read while the other has frames waiting; all released")
    func leadingSideWaitsForTheOther() throws {
        var configuration = GraphProxy.Configuration()
        configuration.leadLimit = 256
        let lab = try GraphHarness(
            ports: Self.comparePorts, objects: ["colo-compare,id=cmp,primary_in=pin,secondary_in=sin,outdev=out"],
            configuration: configuration)
        defer { lab.stop() }
        let journal = ReceiveJournal()
        let frames = (0..<1500).map { udp("datagram \($0)") }
        // The primary gets 1000 frames ahead, alone (nothing waits on the secondary, so nothing holds it back).
        lab.ports["pin"]?.push(contentsOf: Array(frames[0..<1000]))
        #expect(lab.wait { lab.proxy.perform { $0.comparers[0].queuedPackets.primary } == 1000 })
        // Then both have frames waiting, handed over between two turns of the data thread.
        _ = lab.proxy.perform { _ in
            lab.ports["pin"]?.journal = journal
            lab.ports["sin"]?.journal = journal
            lab.ports["sin"]?.push(contentsOf: Array(frames[0..<1000]))
            lab.ports["pin"]?.push(contentsOf: Array(frames[1000...]))
            return true
        }
        #expect(lab.wait { lab.sent("out").count == 1000 })
        lab.ports["sin"]?.push(contentsOf: Array(frames[1000...]))
        #expect(lab.wait { lab.sent("out").count == 1500 })
        // Read in turns of 64 a port, the primary's 500 would all be in before the secondary's 1000 were: instead
        // the secondary is read alone until the lead is under the limit, and the lead stays there.
        let entries = journal.all
        let caughtUp = try #require(entries.firstIndex { $0.0 == "sin" && $0.1 >= 1000 })
        let primaryRead = entries[..<caughtUp].last { $0.0 == "pin" }?.1 ?? 1000
        #expect(primaryRead <= 1000 + 256 + 64, "primary frames read when the secondary had caught up")
        #expect(primaryRead < 1500)
        #expect((lab.proxy.perform { $0.leadDeferredTurns } ?? 0) > 0)
        let inOrder = lab.sent("out") == frames
        #expect(inOrder, "the primary's frames, in order")
        #expect(lab.events.count == 0)
    }

    @Test("the standard chain in object form: mirror, redirect, rewrite, compare over a TCP handshake")
    func standardChainObjects() throws {
        let objects = RunCommand.standardChain(client: "c", primary: "p", secondary: "s").map(\.specText)
        let lab = try GraphHarness(
            ports: ["tap,id=c,ifname=c0", "tap,id=p,ifname=p0", "tap,id=s,ifname=s0"], objects: objects)
        defer { lab.stop() }
        let syn = tcp([.syn], seq: 100, fromClient: true)
        lab.ports["c"]?.push(syn)
        #expect(lab.wait { lab.sent("p").count == 1 && lab.sent("s").count == 1 })
        #expect(lab.sent("p").first == syn)
        #expect(lab.sent("s").first == syn)  // no offset known yet: the SYN goes as it is

        // The replicas answer with different ISNs: the secondary's is rewritten to the primary's, so they compare
        // equal and the primary's goes to the client.
        let primarySynAck = tcp([.syn, .ack], seq: 5000, ack: 101, fromClient: false)
        lab.ports["p"]?.push(primarySynAck)
        lab.ports["s"]?.push(tcp([.syn, .ack], seq: 9000, ack: 101, fromClient: false))
        #expect(lab.wait { lab.sent("c").count == 1 })
        #expect(lab.sent("c").first == primarySynAck)

        // The client's ACK reaches the secondary with ack += 4000.
        lab.ports["c"]?.push(tcp([.ack], seq: 101, ack: 5001, payload: "GET", fromClient: true))
        #expect(lab.wait { lab.sent("s").count == 2 })
        let rewritten = try #require(lab.sent("s").last)
        let ackOffset = 14 + 20 + 8
        let ack = rewritten[ackOffset..<ackOffset + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        #expect(ack == 9001)
        #expect(lab.events.count == 0)

        let connections = lab.proxy.perform { proxy -> Int in
            var withOffset = 0
            proxy.tracker.forEachEntry { handle, _ in
                if let offset = proxy.rewriters.first?.offset(of: handle), offset == 4000 { withOffset += 1 }
            }
            return withOffset
        }
        #expect(connections == 1)
    }

    @Test("filter-set-status switches a stage; unknown ids are an error naming the filters")
    func setStatus() throws {
        let lab = try GraphHarness(
            ports: ["tap,id=a,ifname=a0", "tap,id=b,ifname=b0"],
            objects: ["filter-redirector,id=r,netdev=a,queue=tx,outdev=b"])
        defer { lab.stop() }
        lab.ports["a"]?.push(udp("one"))
        #expect(lab.wait { lab.sent("b").count == 1 })
        #expect(lab.proxy.perform { $0.setStatus("r", on: false) } == true)
        lab.ports["a"]?.push(udp("two"))
        // Off, the redirector passes frames on; nothing reads port a, so the frame is unrouted (counted).
        #expect(lab.wait { lab.proxy.perform { $0.counters.unrouted } == 1 })
        #expect(lab.sent("b").count == 1)
        #expect(lab.proxy.perform { $0.setStatus("nope", on: true) } == false)
    }

    @Test("mirror copies, the original goes on; redirector indev injects toward its netdev")
    func mirrorAndIndev() throws {
        let lab = try GraphHarness(
            ports: ["tap,id=guest,ifname=g0", "tap,id=peer,ifname=p0", "tap,id=copy,ifname=m0"],
            objects: [
                "filter-mirror,id=m,netdev=guest,queue=tx,outdev=copy",
                "filter-redirector,id=r,netdev=guest,queue=rx,indev=peer",
            ])
        defer { lab.stop() }
        let frame = udp("from guest")
        lab.ports["guest"]?.push(frame)
        #expect(lab.wait { lab.sent("copy").count == 1 })
        #expect(lab.sent("copy").first == frame)
        #expect(lab.wait { lab.proxy.perform { $0.counters.unrouted } == 1 })
        let inbound = udp("to guest", from: 1, to: 2)
        lab.ports["peer"]?.push(inbound)
        #expect(lab.wait { lab.sent("guest").count == 1 })
        #expect(lab.sent("guest").first == inbound)
    }
}

@Suite("Prometheus /metrics of a running proxy")
struct GraphProxyMetricsTests {
    /// `curl` output of one scrape, as name{labels} → value.
    static func scrape(_ port: UInt16) throws -> [String: Double] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-sf", "http://127.0.0.1:\(port)/metrics"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        var samples: [String: Double] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, let value = Double(parts[1]) else {
                Issue.record("not a sample line: \(line)")
                continue
            }
            samples[String(parts[0])] = value
        }
        return samples
    }

    @Test("curl /metrics: valid text whose counters move with traffic")
    func countersMove() throws {
        let lab = try GraphHarness(
            ports: GraphProxyTests.comparePorts,
            objects: ["colo-compare,id=cmp,primary_in=pin,secondary_in=sin,outdev=out"])
        defer { lab.stop() }
        let proxy = lab.proxy
        let server = try MetricsServer(host: "127.0.0.1", port: 0) {
            proxy.perform { $0.metricsSnapshot() } ?? MetricsSnapshot()
        }
        defer { server.stop() }
        let before = try Self.scrape(server.port)
        for index in 0..<5 {
            let reply = udp("answer \(index)", port: 100 + UInt16(index))
            lab.ports["pin"]?.push(reply)
            lab.ports["sin"]?.push(reply)
        }
        #expect(lab.wait { lab.sent("out").count == 5 })
        let after = try Self.scrape(server.port)
        let released = after.first { $0.key.hasPrefix("colo_proxy_released_packets_total") }?.value ?? 0
        #expect(released == 5 + (before.first { $0.key.hasPrefix("colo_proxy_released_packets_total") }?.value ?? 0))
        let primaryIn = after.first {
            $0.key.hasPrefix("colo_proxy_packets_total") && $0.key.contains("pin") && $0.key.contains("tx")
        }
        #expect(primaryIn?.value == 5)
        let latency = after.first { $0.key.hasPrefix("colo_proxy_release_latency_seconds_count") }
        #expect(latency?.value == 5)
    }
}

@Suite("GraphProxy: filter-dump and conntrack stages")
struct GraphProxyDumpTests {
    @Test("filter-dump writes what its port hands over; conntrack tracks it in its zone")
    func dumpAndTrack() throws {
        let directory = try TemporaryDirectory()
        let file = "\(directory.path)/dump.pcap"
        let lab = try GraphHarness(
            ports: ["tap,id=a,ifname=a0", "tap,id=b,ifname=b0"],
            objects: [
                "filter-dump,id=d,netdev=a,queue=tx,file=\(file)",
                "conntrack,id=ct,netdev=a,queue=tx,zone=7",
                "filter-redirector,id=r,netdev=a,queue=tx,outdev=b",
            ])
        let frames = (0..<3).map { udp("datagram \($0)", port: 40 + UInt16($0)) }
        for frame in frames { lab.ports["a"]?.push(frame) }
        #expect(lab.wait { lab.sent("b").count == 3 })
        let zones = lab.proxy.perform { proxy -> [UInt16] in
            var zones: [UInt16] = []
            proxy.tracker.forEachEntry { _, entry in zones.append(entry.key.zone) }
            return zones
        }
        #expect(zones == [7, 7, 7])
        lab.stop()
        usleep(100_000)
        _ = lab.proxy.drainOnShutdown()
        let records = try CaptureReader.readAll(path: file)
        #expect(records.map(\.bytes) == frames)
    }
}

@Suite("GraphProxy: fragments whose datagram never completes")
struct GraphProxyFragmentTests {
    @Test("a mirror copy made after the datagram timed out in one zone is not held again in the next zone")
    func expiredCopyNotHeldTwice() throws {
        var configuration = GraphProxy.Configuration()
        configuration.fragments.timeout = 300_000_000
        let lab = try GraphHarness(
            ports: ["tap,id=a,ifname=a0", "tap,id=b,ifname=b0", "tap,id=m,ifname=m0"],
            objects: [
                "conntrack,id=ct1,netdev=a,queue=tx,zone=1",
                "filter-mirror,id=mi,netdev=a,queue=tx,outdev=m",
                "filter-redirector,id=r,netdev=a,queue=tx,outdev=b",
                "conntrack,id=ct2,netdev=m,queue=rx,zone=2",
            ],
            configuration: configuration)
        defer { lab.stop() }
        var ip = IPv4Spec(source: IPv4Address(10, 10, 0, 2), destination: IPv4Address(10, 10, 0, 1))
        ip.dontFragment = false
        let datagram = PacketBuilder.ipv4(
            ip, .udp(UDPSpec(sourcePort: 53, destinationPort: 5000, payload: Array(repeating: 9, count: 3000))))
        let first = PacketBuilder.build(
            .other(etherType: EtherType.ipv4, bytes: PacketBuilder.fragmentIPv4(datagram, maxPayload: 1480)[0]))
        lab.ports["a"]?.push(first)
        usleep(100_000)
        #expect(lab.sent("b").isEmpty && lab.sent("m").isEmpty, "held while the datagram may still complete")
        #expect(lab.wait { lab.sent("b").count == 1 })
        // The copy is made and walked before the original goes on: when the original is out, so is the copy,
        // unless zone 2's front end took it for a second timeout.
        #expect(lab.sent("m") == [first])
        #expect(lab.sent("b") == [first])
        #expect(lab.proxy.perform { $0.store.inUse } == 0)
    }
}

@Suite("GraphProxy: specs that loop")
struct GraphProxyLoopTests {
    @Test("two redirectors sending each other's frames back and forth: dropped and counted, no crash")
    func redirectorLoop() throws {
        let lab = try GraphHarness(
            ports: ["tap,id=a,ifname=a0", "tap,id=b,ifname=b0"],
            objects: [
                "filter-redirector,id=ra,netdev=a,queue=all,outdev=b",
                "filter-redirector,id=rb,netdev=b,queue=all,outdev=a",
            ])
        defer { lab.stop() }
        lab.ports["a"]?.push(udp("round and round"))
        #expect(lab.wait { lab.proxy.perform { $0.counters.loops } == 1 })
        #expect(lab.sent("a").isEmpty && lab.sent("b").isEmpty)
        #expect(lab.proxy.perform { $0.store.inUse } == 0)
    }
}

@Suite("GraphProxy: Ethernet and raw-IP ports")
struct GraphProxyLinkTests {
    @Test(
        "Ethernet toward raw IP loses its header; raw IP toward Ethernet gets the port's last addresses, swapped (refused, counted, before any)"
    )
    func reframing() throws {
        let lab = try GraphHarness(
            ports: ["tap,id=e,ifname=e0", "tun,id=t,ifname=t0"],
            objects: [
                "filter-redirector,id=et,netdev=e,queue=tx,outdev=t",
                "filter-redirector,id=te,netdev=t,queue=tx,outdev=e",
            ])
        defer { lab.stop() }
        let frame = udp("to the tunnel")
        let packet = Array(frame[14...])
        // Nothing seen from the Ethernet port yet: no addresses to give the raw-IP packet.
        lab.ports["t"]?.push(packet)
        #expect(lab.wait { lab.proxy.perform { $0.counters.linkMismatch } == 1 })
        #expect(lab.sent("e").isEmpty)

        lab.ports["e"]?.push(frame)
        #expect(lab.wait { lab.sent("t").count == 1 })
        #expect(lab.sent("t").first == packet)

        let reply = udp("from the tunnel", from: 1, to: 2)
        lab.ports["t"]?.push(Array(reply[14...]))
        #expect(lab.wait { lab.sent("e").count == 1 })
        let sent = try #require(lab.sent("e").first)
        #expect(Array(sent[0..<6]) == Array(frame[6..<12]), "destination: the station behind the port")
        #expect(Array(sent[6..<12]) == Array(frame[0..<6]), "source: the address it talked to")
        #expect(Array(sent[12..<14]) == [0x08, 0x00])
        #expect(Array(sent[14...]) == Array(reply[14...]))
    }
}
