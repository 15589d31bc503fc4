import ArgumentParser
import ColoPacket
import ColoPacketBuilder
import ColoPorts
import ColoRuntime
import ColoStages
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `colo-proxy loadgen`: feeds a colo-compare-compatible endpoint (QEMU's colo-compare or `colo-proxy run`) identical
/// framed primary and secondary streams and measures the frames released on its outdev.
///
/// Hidden: a benchmark and test tool, not part of the product's interface.
struct LoadgenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loadgen",
        abstract: "Load generator for a colo-compare endpoint (primary_in, secondary_in, outdev chardev sockets).",
        shouldDisplay: false
    )

    @Option(help: "primary_in socket: HOST:PORT or a Unix socket path.") var primary: String
    @Option(help: "secondary_in socket: HOST:PORT or a Unix socket path.") var secondary: String
    @Option(help: "outdev socket: HOST:PORT or a Unix socket path.") var outdev: String
    @Option(help: "TCP connections.") var connections = 1
    @Option(help: "Data segments per connection (after the SYN|ACK).") var packets = 1000
    @Option(name: .customLong("payload-size"), help: "TCP payload bytes per data segment.") var payloadSize = 100
    @Option(help: "Frames per side per write batch, alternating primary and secondary (0: two independent writers).")
    var batch = 64
    @Option(help: "Give up when no frame was released for this many seconds.") var idleTimeout = 5.0
    @Flag(help: "Also print one JSON object.") var json = false

    func validate() throws {
        guard (1...60000).contains(connections) else { throw ValidationError("--connections must be 1...60000") }
        guard batch >= 0 else { throw ValidationError("--batch must be 0 or more") }
        guard packets >= 1 else { throw ValidationError("--packets must be at least 1") }
        guard (1...1460).contains(payloadSize) else { throw ValidationError("--payload-size must be 1...1460") }
        let bytes = connections * (packets + 1) * (payloadSize + 58)
        guard bytes <= 1 << 30 else { throw ValidationError("stream would be \(bytes) bytes; the limit is 1 GiB") }
        for address in [primary, secondary, outdev] { _ = try LoadgenEndpoint(parsing: address) }
    }

    func run() throws {
        let frames = LoadgenTraffic.tcpStreams(connections: connections, packets: packets, payloadSize: payloadSize)
        let stream = try LoadgenTraffic.encode(frames)
        let result = try LoadgenRun.run(
            primary: LoadgenEndpoint(parsing: primary), secondary: LoadgenEndpoint(parsing: secondary),
            outdev: LoadgenEndpoint(parsing: outdev), primaryStream: stream, secondaryStream: stream,
            expected: frames.count, idleTimeout: idleTimeout, keepFrames: false, interleave: batch)
        let pairsPerSecond = result.seconds > 0 ? Double(result.released) / result.seconds : 0
        print(
            "loadgen: sent \(frames.count) frames per side (\(connections) connections x \(packets) packets x "
                + "\(payloadSize) bytes), released \(result.released) in "
                + String(format: "%.3f", result.seconds) + " s: " + String(format: "%.0f", pairsPerSecond) + " pairs/s")
        if json {
            print(
                "{\"connections\":\(connections),\"packets\":\(packets),\"payload_size\":\(payloadSize),"
                    + "\"sent_per_side\":\(frames.count),\"released\":\(result.released),"
                    + "\"seconds\":\(String(format: "%.6f", result.seconds)),"
                    + "\"pairs_per_second\":\(String(format: "%.1f", pairsPerSecond))}")
        }
        if result.released < frames.count { throw ExitCode(1) }
    }
}

/// A chardev socket address: `HOST:PORT` (IPv4 literal or `localhost`) or a Unix socket path (contains `/`).
public enum LoadgenEndpoint: Sendable, Equatable {
    case tcp(host: String, port: UInt16)
    case unix(path: String)

    public init(parsing text: String) throws {
        if text.contains("/") {
            self = .unix(path: text)
            return
        }
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]), port > 0
        else { throw ValidationError("'\(text)' is neither HOST:PORT nor a Unix socket path") }
        var host = String(text[..<colon])
        if host == "localhost" || host.isEmpty { host = "127.0.0.1" }
        var addr = in_addr()
        guard inet_pton(AF_INET, host, &addr) == 1 else { throw ValidationError("'\(host)' is not an IPv4 address") }
        self = .tcp(host: host, port: port)
    }

    /// A connected, blocking stream socket (addresses resolved as a `socket` port resolves them).
    public func connect() throws -> Int32 {
        let endpoint: SocketPortSpec.Endpoint
        switch self {
        case .tcp(let host, let port): endpoint = .tcp(host: host, port: port)
        case .unix(let path): endpoint = .unix(path: path)
        }
        let address = try SocketAddress(endpoint, portID: "loadgen")
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw LoadgenError("socket: \(String(cString: strerror(errno)))") }
        if address.family != AF_UNIX {
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        guard address.withSockaddr({ Glibc.connect(fd, $0, $1) }) == 0 else {
            let message = String(cString: strerror(errno))
            close(fd)
            throw LoadgenError("connect \(SocketAddress.describe(endpoint)): \(message)")
        }
        return fd
    }
}

public struct LoadgenError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The frames the load generator sends: what a guest's server side emits (SYN|ACK, then data), IPv4.
public enum LoadgenTraffic {
    public static let guestISN: UInt32 = 0x1000_0000
    public static let clientISN: UInt32 = 0x2000_0000

    /// `connections` TCP connections from 10.0.0.2:80 to 10.0.0.1:(10000+c): each a SYN|ACK then `packets` data
    /// segments of `payloadSize` bytes, interleaved round-robin across connections.
    public static func tcpStreams(connections: Int, packets: Int, payloadSize: Int) -> [[UInt8]] {
        var ip = IPv4Spec(source: IPv4Address(10, 0, 0, 2), destination: IPv4Address(10, 0, 0, 1))
        ip.identification = 1
        var frames: [[UInt8]] = []
        frames.reserveCapacity(connections * (packets + 1))
        for c in 0..<connections {
            frames.append(
                PacketBuilder.tcp4(
                    TCPSpec(
                        sourcePort: 80, destinationPort: UInt16(10000 + c), sequenceNumber: guestISN,
                        acknowledgmentNumber: clientISN &+ 1, flags: [.syn, .ack]), ip: ip))
        }
        for k in 0..<packets {
            let payload = (0..<payloadSize).map { UInt8(truncatingIfNeeded: $0 &+ k) }
            for c in 0..<connections {
                frames.append(
                    PacketBuilder.tcp4(
                        TCPSpec(
                            sourcePort: 80, destinationPort: UInt16(10000 + c),
                            sequenceNumber: guestISN &+ 1 &+ UInt32(k * payloadSize),
                            acknowledgmentNumber: clientISN &+ 1, flags: [.ack, .psh], payload: payload), ip: ip))
            }
        }
        return frames
    }

    /// The frames framed back to back: without a V field, or, given `vnetHeaders` (one per frame, possibly empty),
    /// with vnet_hdr_support's V field and those headers.
    public static func encode(_ frames: [[UInt8]], vnetHeaders: [[UInt8]]? = nil) throws -> [UInt8] {
        if let vnetHeaders, vnetHeaders.count != frames.count {
            throw LoadgenError("\(vnetHeaders.count) vnet headers for \(frames.count) frames")
        }
        let encoder = ChardevFrameEncoder(framing: ChardevFraming(vnetHeaderSupport: vnetHeaders != nil))
        var out: [UInt8] = []
        out.reserveCapacity(frames.reduce(0) { $0 + $1.count + 8 })
        var failure: String?
        for (index, frame) in frames.enumerated() where failure == nil {
            let header = vnetHeaders?[index] ?? []
            frame.withUnsafeBytes { raw in
                header.withUnsafeBytes { vnet in
                    do { try encoder.append(vnetHeader: vnet, ethernet: raw, to: &out) } catch { failure = "\(error)" }
                }
            }
        }
        if let failure { throw LoadgenError("cannot frame a packet: \(failure)") }
        return out
    }
}

/// One load run: connect outdev, then primary and secondary; write both streams on two threads; count (and keep,
/// when asked) the frames read from the outdev until `expected` arrived or nothing came for `idleTimeout` seconds.
public enum LoadgenRun {
    public struct Result: Sendable {
        public var released: Int
        /// From the first byte written to the last frame released.
        public var seconds: Double
        public var frames: [[UInt8]]
        /// With `keepFrames`, each released frame's vnet header (empty without one, or with no V field).
        public var vnetHeaders: [[UInt8]]
    }

    public static func run(
        primary: LoadgenEndpoint, secondary: LoadgenEndpoint, outdev: LoadgenEndpoint, primaryStream: [UInt8],
        secondaryStream: [UInt8], expected: Int, idleTimeout: Double, keepFrames: Bool,
        primaryDelay: Double = 0, secondaryDelay: Double = 0, interleave: Int = 0,
        outdevFraming: ChardevFraming = ChardevFraming()
    ) throws -> Result {
        let outFD = try outdev.connect()
        defer { close(outFD) }
        let primaryFD = try primary.connect()
        defer { close(primaryFD) }
        let secondaryFD = try secondary.connect()
        defer { close(secondaryFD) }
        // Let the endpoint register the three clients before traffic starts.
        usleep(100_000)
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        setsockopt(outFD, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

        // Batch boundaries are found before the clock starts: walking a million frames is the harness's work.
        let primaryEnds = interleave > 0 ? batchEnds(primaryStream, frames: interleave) : []
        let secondaryEnds = interleave > 0 ? batchEnds(secondaryStream, frames: interleave) : []
        let start = Date()
        if interleave > 0 {
            // One thread, K frames to the primary then K to the secondary: the replicas run in lock-step, so neither
            // side gets more than a batch (plus socket buffers) ahead of the other.
            let thread = Thread {
                writeInterleaved(primaryFD, primaryStream, primaryEnds, secondaryFD, secondaryStream, secondaryEnds)
            }
            thread.start()
        }
        let pairs = [(primaryFD, primaryStream, primaryDelay), (secondaryFD, secondaryStream, secondaryDelay)]
        let writers = (interleave > 0 ? [] : pairs).map {
            fd, stream, delay in
            let thread = Thread {
                if delay > 0 { usleep(useconds_t(delay * 1_000_000)) }
                writeAll(fd, stream)
            }
            thread.start()
            return thread
        }
        _ = writers

        var decoder = ChardevFrameDecoder(framing: outdevFraming)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var released = 0
        var frames: [[UInt8]] = []
        var headers: [[UInt8]] = []
        var lastFrame = start
        var lastProgress = Date()
        while released < expected {
            let n = buffer.withUnsafeMutableBytes { read(outFD, $0.baseAddress, $0.count) }
            if n > 0 {
                let (count, failure) = buffer.withUnsafeBytes { raw in
                    feed(
                        &decoder, UnsafeRawBufferPointer(rebasing: raw[0..<n]), keepFrames: keepFrames, into: &frames,
                        headers: &headers)
                }
                if let failure { throw LoadgenError("outdev stream: \(failure)") }
                if count > 0 {
                    released += count
                    lastFrame = Date()
                    lastProgress = lastFrame
                }
            } else if n == 0 {
                break
            } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                throw LoadgenError("read outdev: \(String(cString: strerror(errno)))")
            }
            if Date().timeIntervalSince(lastProgress) > idleTimeout { break }
        }
        return Result(
            released: released, seconds: lastFrame.timeIntervalSince(start), frames: frames, vnetHeaders: headers)
    }

    static func feed(
        _ decoder: inout ChardevFrameDecoder, _ bytes: UnsafeRawBufferPointer, keepFrames: Bool,
        into frames: inout [[UInt8]], headers: inout [[UInt8]]
    ) -> (Int, ChardevError?) {
        var count = 0
        do {
            try decoder.feed(bytes) { (frame: ChardevFrame) throws(ChardevError) -> Void in
                count += 1
                if keepFrames {
                    frames.append(Array(frame.ethernet))
                    headers.append(Array(frame.vnetHeader))
                }
            }
        } catch {
            return (count, error)
        }
        return (count, nil)
    }

    /// Byte offsets in a framed stream after every `frames` frames, ending with the stream's length.
    static func batchEnds(_ stream: [UInt8], frames: Int) -> [Int] {
        var ends: [Int] = []
        var offset = 0
        var count = 0
        while offset + 4 <= stream.count {
            let length =
                Int(stream[offset]) << 24 | Int(stream[offset + 1]) << 16 | Int(stream[offset + 2]) << 8
                | Int(stream[offset + 3])
            offset = min(stream.count, offset + 4 + length)
            count += 1
            if count % frames == 0 { ends.append(offset) }
        }
        if ends.last != stream.count { ends.append(stream.count) }
        return ends
    }

    static func writeInterleaved(
        _ fdA: Int32, _ a: [UInt8], _ endsA: [Int], _ fdB: Int32, _ b: [UInt8], _ endsB: [Int]
    ) {
        var startA = 0
        var startB = 0
        for i in 0..<max(endsA.count, endsB.count) {
            if i < endsA.count {
                writeAll(fdA, a, from: startA, to: endsA[i])
                startA = endsA[i]
            }
            if i < endsB.count {
                writeAll(fdB, b, from: startB, to: endsB[i])
                startB = endsB[i]
            }
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        writeAll(fd, bytes, from: 0, to: bytes.count)
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], from: Int, to end: Int) {
        bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            var offset = from
            while offset < end {
                let n = write(fd, base + offset, end - offset)
                if n > 0 {
                    offset += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }
}
