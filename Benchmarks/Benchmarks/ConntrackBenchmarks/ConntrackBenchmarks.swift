import Benchmark
import ColoConntrack
import ColoPacket
import ColoPacketBuilder

// Flows are made by patching a template frame (source address and port) and fixing its checksums, which is
// far faster than building a million frames field by field.
struct FlowFactory {
    let template: [UInt8]
    let layout: PacketLayout

    init(_ template: [UInt8]) {
        self.template = template
        layout = template.withUnsafeBytes { (try? PacketParser.parse($0, linkType: .ethernet)) ?? PacketLayout() }
    }

    /// Flow `n`: client 10.(n>>16).(n>>8).(n) : 1024 + n % 50000, or, reversed, the server's side of it.
    func frame(_ n: Int, reversed: Bool = false) -> [UInt8] {
        var bytes = template
        let address: [UInt8] = [
            10, UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n),
        ]
        let port = UInt16(1024 + n % 50000)
        let ip = layout.networkOffset
        let tcp = layout.transportOffset
        bytes.replaceSubrange((ip + (reversed ? 16 : 12))..<(ip + (reversed ? 20 : 16)), with: address)
        let portOffset = tcp + (reversed ? 2 : 0)
        bytes[portOffset] = UInt8(port >> 8)
        bytes[portOffset + 1] = UInt8(port & 0xFF)
        bytes.withUnsafeMutableBytes { ChecksumWriter.fill($0, layout: layout) }
        return bytes
    }
}

let server = IPv4Address(192, 168, 100, 1)
let clientTemplate = IPv4Spec(source: IPv4Address(10, 0, 0, 0), destination: server)
let serverTemplate = IPv4Spec(source: server, destination: IPv4Address(10, 0, 0, 0))
let syn = FlowFactory(
    PacketBuilder.tcp4(
        TCPSpec(sourcePort: 1024, destinationPort: 80, sequenceNumber: 1000, flags: .syn, options: [.windowScale(7)]),
        ip: clientTemplate))
let synAck = FlowFactory(
    PacketBuilder.tcp4(
        TCPSpec(
            sourcePort: 80, destinationPort: 1024, sequenceNumber: 5000, acknowledgmentNumber: 1001,
            flags: [.syn, .ack], options: [.windowScale(7)]), ip: serverTemplate))
let ack = FlowFactory(
    PacketBuilder.tcp4(
        TCPSpec(sourcePort: 1024, destinationPort: 80, sequenceNumber: 1001, acknowledgmentNumber: 5001, flags: .ack),
        ip: clientTemplate))
/// An established flow's data segment: 100 bytes, in window, repeatable.
let data = FlowFactory(
    PacketBuilder.tcp4(
        TCPSpec(
            sourcePort: 1024, destinationPort: 80, sequenceNumber: 1001, acknowledgmentNumber: 5001,
            flags: [.ack, .psh], payload: [UInt8](repeating: 0x61, count: 100)), ip: clientTemplate))

func track(_ tracker: ConnectionTracker, _ frame: [UInt8], now: UInt64) -> TrackResult? {
    frame.withUnsafeBytes { raw in
        guard let packet = try? Packet(raw, linkType: .ethernet) else { return nil }
        return tracker.track(packet, now: now)
    }
}

/// A tracker holding `count` established TCP connections.
func establishedTable(_ count: Int) -> ConnectionTracker {
    var configuration = ConntrackConfiguration()
    configuration.maxConnections = count + 1024
    let tracker = ConnectionTracker(configuration: configuration)
    for n in 0..<count {
        _ = track(tracker, syn.frame(n), now: 1)
        _ = track(tracker, synAck.frame(n, reversed: true), now: 1)
        _ = track(tracker, ack.frame(n), now: 1)
    }
    return tracker
}

let million = 1_000_000

/// Rewrites one frame in place into flow `n` (source address and port, checksums patched incrementally), so
/// the packet under test is as hot in the cache as a just-received one and only the table's own memory
/// traffic is measured.
@inline(__always)
func patch(_ raw: UnsafeMutableRawBufferPointer, _ layout: PacketLayout, flow n: Int) {
    let ip = layout.networkOffset
    let tcp = layout.transportOffset
    let oldAddress = UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: ip + 12, as: UInt32.self))
    let newAddress = UInt32(10) << 24 | UInt32(truncatingIfNeeded: n & 0xFF_FFFF)
    let oldPort = UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: tcp, as: UInt16.self))
    let newPort = UInt16(1024 + n % 50000)
    raw.storeBytes(of: newAddress.bigEndian, toByteOffset: ip + 12, as: UInt32.self)
    raw.storeBytes(of: newPort.bigEndian, toByteOffset: tcp, as: UInt16.self)
    let ipSum = UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: ip + 10, as: UInt16.self))
    raw.storeBytes(
        of: Checksum.update(ipSum, old: oldAddress, new: newAddress).bigEndian, toByteOffset: ip + 10, as: UInt16.self)
    var tcpSum = UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: tcp + 16, as: UInt16.self))
    tcpSum = Checksum.update(tcpSum, old: oldAddress, new: newAddress)
    tcpSum = Checksum.update(tcpSum, old: oldPort, new: newPort)
    raw.storeBytes(of: tcpSum.bigEndian, toByteOffset: tcp + 16, as: UInt16.self)
}

/// A non-generic sink: package-benchmark's `blackHole` is generic and costs a value-witness copy per call.
@inline(never) func consume(_ result: TrackResult) { sink &+= Int(result.state.rawValue) }
nonisolated(unsafe) var sink = 0

/// Parses into a reused layout and tracks: what the data path does per packet.
@inline(__always)
func parseAndTrack(
    _ tracker: ConnectionTracker, _ raw: UnsafeRawBufferPointer, _ layout: inout PacketLayout, now: UInt64
) {
    do {
        try PacketParser.parse(raw, linkType: .ethernet, into: &layout)
        consume(tracker.track(Packet(bytes: raw, layout: layout), now: now))
    } catch {
        sink &+= 1
    }
}

/// The key flow `n` of the benchmarks has, for the Dictionary baselines.
func baselineKey(_ n: Int) -> FlowKey {
    FlowKey(
        sourceLow: UInt64(10 << 24 | (n & 0xFF_FFFF)), destinationLow: UInt64(server.value),
        sourcePort: UInt16(1024 + n % 50000), destinationPort: 80, zone: 0, protocolNumber: 6, family: 4)
}

/// Commits `benchmark.scaledIterations` new connections one packet at a time into a fresh table.
func commitOneAtATime(_ benchmark: Benchmark, initialCapacity: Int) {
    var configuration = ConntrackConfiguration()
    configuration.maxConnections = million + 1024
    configuration.initialCapacity = initialCapacity
    let tracker = ConnectionTracker(configuration: configuration)
    var frame = syn.template
    frame.withUnsafeMutableBytes { raw in
        var layout = PacketLayout()
        benchmark.startMeasurement()
        for n in benchmark.scaledIterations {
            patch(raw, syn.layout, flow: n)
            parseAndTrack(tracker, UnsafeRawBufferPointer(raw), &layout, now: 1)
        }
        benchmark.stopMeasurement()
    }
    blackHole(tracker.count)
}

let batchSize = 32

/// Runs `count` packets through `tracker.track(batch:)` in batches of 32: each batch's frames are patched into
/// flows `flow(i)` in a small, cache-hot arena, parsed, and tracked together (the data path's shape).
func trackInBatches(_ tracker: ConnectionTracker, template: FlowFactory, count: Int, flow: (Int) -> Int) {
    let stride = 256
    var arena = [UInt8](repeating: 0, count: stride * batchSize)
    for slot in 0..<batchSize {
        arena.replaceSubrange((slot * stride)..<(slot * stride + template.template.count), with: template.template)
    }
    let length = template.template.count
    let packets = UnsafeMutableBufferPointer<Packet>.allocate(capacity: batchSize)
    let results = UnsafeMutableBufferPointer<TrackResult>.allocate(capacity: batchSize)
    defer {
        packets.deallocate()
        results.deallocate()
    }
    arena.withUnsafeMutableBytes { memory in
        var layout = PacketLayout()
        var done = 0
        while done < count {
            let n = min(batchSize, count - done)
            for slot in 0..<n {
                let frame = UnsafeMutableRawBufferPointer(rebasing: memory[(slot * stride)..<(slot * stride + length)])
                patch(frame, template.layout, flow: flow(done + slot))
                do {
                    try PacketParser.parse(UnsafeRawBufferPointer(frame), linkType: .ethernet, into: &layout)
                } catch {
                    sink &+= 1
                }
                packets.initializeElement(at: slot, to: Packet(bytes: UnsafeRawBufferPointer(frame), layout: layout))
            }
            tracker.track(batch: UnsafeBufferPointer(rebasing: packets[0..<n]), now: 2, results: results)
            for slot in 0..<n { consume(results[slot]) }
            done += n
        }
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .instructions, .peakMemoryResident],
        warmupIterations: 1,
        scalingFactor: .mega,
        maxDuration: .seconds(10),
        maxIterations: 5
    )

    Benchmark("conntrack established flow, lookup+update, 1M entries (same flow)") {
        (benchmark: Benchmark, tracker: ConnectionTracker) in
        let frame = data.frame(million / 2)
        frame.withUnsafeBytes { raw in
            guard let packet = try? Packet(raw, linkType: .ethernet) else { return }
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                consume(tracker.track(packet, now: 2))
            }
            benchmark.stopMeasurement()
        }
    } setup: {
        establishedTable(million)
    }

    Benchmark("conntrack established flows, lookup+update, 1M entries (random flow each packet)") {
        (benchmark: Benchmark, state: (ConnectionTracker, [Int])) in
        let (tracker, flows) = state
        var frame = data.template
        frame.withUnsafeMutableBytes { raw in
            var layout = PacketLayout()
            var i = 0
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                patch(raw, data.layout, flow: flows[i])
                parseAndTrack(tracker, UnsafeRawBufferPointer(raw), &layout, now: 2)
                i = (i + 1) & (flows.count - 1)
            }
            benchmark.stopMeasurement()
        }
    } setup: {
        var generator = SystemRandomNumberGenerator()
        return (establishedTable(million), (0..<65536).map { _ in Int.random(in: 0..<million, using: &generator) })
    }

    Benchmark("conntrack commit new connection (SYN), table growing from 1K to 1M") { benchmark in
        commitOneAtATime(benchmark, initialCapacity: 1024)
    }

    Benchmark("conntrack commit new connection (SYN), table sized for 1M up front") { benchmark in
        commitOneAtATime(benchmark, initialCapacity: million + 1024)
    }

    Benchmark("conntrack commit new connection (SYN), table sized for 1M up front, batches of 32") { benchmark in
        var configuration = ConntrackConfiguration()
        configuration.maxConnections = million + 1024
        configuration.initialCapacity = million + 1024
        let tracker = ConnectionTracker(configuration: configuration)
        benchmark.startMeasurement()
        trackInBatches(tracker, template: syn, count: benchmark.scaledIterations.count) { $0 }
        benchmark.stopMeasurement()
        blackHole(tracker.count)
    }

    Benchmark("conntrack established flows, lookup+update, 1M entries (random flow each packet), batches of 32") {
        (benchmark: Benchmark, state: (ConnectionTracker, [Int])) in
        let (tracker, flows) = state
        benchmark.startMeasurement()
        trackInBatches(tracker, template: data, count: benchmark.scaledIterations.count) {
            flows[$0 & (flows.count - 1)]
        }
        benchmark.stopMeasurement()
    } setup: {
        var generator = SystemRandomNumberGenerator()
        return (establishedTable(million), (0..<65536).map { _ in Int.random(in: 0..<million, using: &generator) })
    }

    // Baselines measured in the same run: the standard library's Dictionary keyed by the same FlowKey (SipHash),
    // doing only the lookup or insert, with no protocol logic.
    Benchmark("baseline: Dictionary<FlowKey, UInt32> lookup, 1M entries (random flow each packet)") {
        (benchmark: Benchmark, state: ([FlowKey: UInt32], [FlowKey])) in
        let (dictionary, keys) = state
        benchmark.startMeasurement()
        var i = 0
        for _ in benchmark.scaledIterations {
            sink &+= Int(dictionary[keys[i]] ?? 0)
            i = (i + 1) & (keys.count - 1)
        }
        benchmark.stopMeasurement()
    } setup: {
        var dictionary: [FlowKey: UInt32] = [:]
        dictionary.reserveCapacity(million)
        for n in 0..<million { dictionary[baselineKey(n)] = UInt32(n) }
        var generator = SystemRandomNumberGenerator()
        return (dictionary, (0..<65536).map { _ in baselineKey(Int.random(in: 0..<million, using: &generator)) })
    }

    Benchmark("baseline: Dictionary<FlowKey, UInt32> insert, capacity reserved for 1M") { benchmark in
        var dictionary: [FlowKey: UInt32] = [:]
        dictionary.reserveCapacity(million)
        benchmark.startMeasurement()
        for n in benchmark.scaledIterations { dictionary[baselineKey(n)] = UInt32(truncatingIfNeeded: n) }
        benchmark.stopMeasurement()
        blackHole(dictionary.count)
    }

    Benchmark(
        "conntrack memory: 1M established entries (bytes per connection = table footprint / 1M)",
        configuration: .init(metrics: [.peakMemoryResident, .wallClock], scalingFactor: .one, maxIterations: 1)
    ) { benchmark in
        let tracker = establishedTable(million)
        benchmark.measurement(
            .custom("table bytes per connection", polarity: .prefersSmaller), tracker.memoryFootprint / tracker.count)
        blackHole(tracker)
    }
}
