import ColoConntrack
import ColoPacket
import ColoPacketBuilder
import Glibc
import StagesSupport

// Usage: ConntrackProfile [same|commit|layout] [seconds]. Tracks one established flow over and over (or commits new
// SYNs) for the given time and prints ns per packet; run it under `perf record -e cpu-clock`.
let mode = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "same"
if mode == "layout" {
    var c = ConntrackConfiguration()
    c.maxConnections = 1_000_000
    c.initialCapacity = 1_000_000
    let t = ConnectionTracker(configuration: c)
    print(
        "entry stride \(MemoryLayout<ConnectionEntry>.stride) bytes; table for 1M: \(t.memoryFootprint / 1_000_000) bytes per connection"
    )
    exit(0)
}
let seconds = CommandLine.arguments.count > 2 ? Double(CommandLine.arguments[2]) ?? 5 : 5
if mode == "stages" {
    let payload = CommandLine.arguments.count > 3 ? Int(CommandLine.arguments[3]) ?? 100 : 100
    // A fresh generator every 200,000 pairs: the generated client never acks, so a longer stream would run past
    // the replicas' send window and be tracked invalid (an uncached path the benchmarks never take).
    var generator = StreamGenerator(payloadSize: payload)
    let clock = ContinuousClock()
    let start = clock.now
    let deadline = start.advanced(by: .milliseconds(Int(seconds * 1000)))
    var pairs = 0
    while clock.now < deadline {
        generator.run(pairs: 100_000)
        pairs += 100_000
        if pairs % 200_000 == 0 { generator = StreamGenerator(payloadSize: payload) }
    }
    let elapsed = clock.now - start
    let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
    let events = generator.pipeline.comparer.events.count
    print("stages \(payload)-byte: \(pairs) pairs, \(ns / Double(pairs)) ns/pair, events \(events)")
    exit(0)
}

var c = TCPSpec(sourcePort: 1024, destinationPort: 80, sequenceNumber: 1000, flags: .syn, options: [.windowScale(7)])
let client = IPv4Spec(source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(192, 168, 100, 1))
let server = IPv4Spec(source: IPv4Address(192, 168, 100, 1), destination: IPv4Address(10, 0, 0, 1))
let syn = PacketBuilder.tcp4(c, ip: client)
let synAck = PacketBuilder.tcp4(
    TCPSpec(
        sourcePort: 80, destinationPort: 1024, sequenceNumber: 5000, acknowledgmentNumber: 1001, flags: [.syn, .ack],
        options: [.windowScale(7)]), ip: server)
let ack = PacketBuilder.tcp4(
    TCPSpec(sourcePort: 1024, destinationPort: 80, sequenceNumber: 1001, acknowledgmentNumber: 5001, flags: .ack),
    ip: client)
let data = PacketBuilder.tcp4(
    TCPSpec(
        sourcePort: 1024, destinationPort: 80, sequenceNumber: 1001, acknowledgmentNumber: 5001, flags: [.ack, .psh],
        payload: [UInt8](repeating: 0x61, count: 100)), ip: client)

/// The frames here are built by PacketBuilder and always parse; if one did not, the profile would be meaningless.
func parsed(_ raw: UnsafeRawBufferPointer) -> Packet {
    do { return try Packet(raw, linkType: .ethernet) } catch {
        print("ConntrackProfile: a built frame did not parse: \(error)")
        exit(1)
    }
}

var configuration = ConntrackConfiguration()
configuration.maxConnections = 2_000_000
let tracker = ConnectionTracker(configuration: configuration)
var sink = 0
for frame in [syn, synAck, ack] {
    frame.withUnsafeBytes { sink &+= Int(tracker.track(parsed($0), now: 1).state.rawValue) }
}
if mode == "commit" {
    var c2 = ConntrackConfiguration()
    c2.maxConnections = 20_000_000
    c2.initialCapacity = 20_000_000
    let fresh = ConnectionTracker(configuration: c2)
    var frame = syn
    let layout = syn.withUnsafeBytes { parsed($0).layout }
    let clock = ContinuousClock()
    let start = clock.now
    var n = 0
    frame.withUnsafeMutableBytes { raw in
        while n < 15_000_000 {
            // New source address and port per packet, checksums patched incrementally.
            let ip = layout.networkOffset
            let old = UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: ip + 12, as: UInt32.self))
            let new = UInt32(10) << 24 | UInt32(n & 0xFF_FFFF)
            raw.storeBytes(of: new.bigEndian, toByteOffset: ip + 12, as: UInt32.self)
            let t = layout.transportOffset
            let sum = UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: t + 16, as: UInt16.self))
            raw.storeBytes(
                of: Checksum.update(sum, old: old, new: new).bigEndian, toByteOffset: t + 16, as: UInt16.self)
            sink &+= Int(fresh.track(Packet(bytes: UnsafeRawBufferPointer(raw), layout: layout), now: 1).state.rawValue)
            n += 1
        }
    }
    let elapsed = clock.now - start
    let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
    print("commit: \(n) packets, \(ns / Double(n)) ns/packet, \(fresh.count) entries (sink \(sink))")
    exit(0)
}
let clock = ContinuousClock()
let start = clock.now
var packets = 0
let deadline = start.advanced(by: .milliseconds(Int(seconds * 1000)))
data.withUnsafeBytes { raw in
    let packet = parsed(raw)
    while clock.now < deadline {
        for _ in 0..<100_000 {
            sink &+= Int(tracker.track(packet, now: 2).state.rawValue)
        }
        packets += 100_000
    }
}
let elapsed = clock.now - start
let ns = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
print("\(mode): \(packets) packets, \(ns / Double(packets)) ns/packet (sink \(sink))")
