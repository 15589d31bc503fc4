import ArgumentParser
import ColoCapture
import ColoConntrack
import ColoPacket

#if canImport(Glibc)
    import Glibc
#endif

/// Output formats shared by the offline subcommands.
public enum OutputFormat: String, ExpressibleByArgument, CaseIterable, Sendable {
    case text, json
}

/// `colo-proxy conntrack --pcap FILE`: every packet's ct_state, as the tracker would report it live.
public struct ConntrackCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "conntrack",
        abstract: "Track the connections of a capture and print each packet's ct_state (OVS form).",
        discussion: """
            Fragments are reassembled and the datagram is tracked whole; every fragment is printed with its \
            datagram's state. Capture timestamps drive the timeouts. Exit 0 on success, 2 when the capture \
            cannot be read.
            """
    )

    @Option(name: .long, help: "The capture to read (pcap or pcapng; Ethernet or raw IP).")
    public var pcap: String

    @Option(name: .long, help: "Conntrack zone to track in (0-65535).")
    public var zone: UInt16 = 0

    @Option(name: .long, help: "Output format: text or json.")
    public var format: OutputFormat = .text

    @Flag(name: .long, help: "Print the table in `conntrack -L` form at the end.")
    public var list = false

    @Flag(name: .customLong("events"), help: "Print `conntrack -E` lines as connections change.")
    public var events = false

    @Flag(name: .long, help: "Disable TCP mid-stream pickup.")
    public var noPickup = false

    @Flag(name: .long, help: "Skip TCP window checks (liberal mode).")
    public var liberal = false

    public init() {}

    public func run() throws {
        var output = StandardOutput()
        do throws(CaptureError) {
            try Self.track(
                path: pcap, zone: zone, format: format, list: list, events: events, pickup: !noPickup, liberal: liberal
            ) { output.write($0) }
            output.flush()
        } catch {
            output.flush()
            StandardError.line("colo-proxy conntrack: \(error)")
            throw ExitCode(2)
        }
    }

    /// What `track` saw, for tests.
    public struct Report: Sendable {
        public var packets = 0
        public var states: [Int: TrackResult] = [:]
    }

    /// Tracks a capture, handing each output line to `emit` in packet order.
    @discardableResult
    public static func track(
        path: String, zone: UInt16 = 0, format: OutputFormat = .text, list: Bool = false, events: Bool = false,
        pickup: Bool = true, liberal: Bool = false, emit: (String) -> Void
    ) throws(CaptureError) -> Report {
        var configuration = ConntrackConfiguration()
        configuration.tcpMidStreamPickup = pickup
        configuration.tcpLiberal = liberal
        let tracker = ConnectionTracker(configuration: configuration)
        let frontEnd = FragmentAwareTracker(tracker: tracker)
        var eventLines: [String] = []
        if events {
            tracker.eventHandler = { kind, entry, now in
                eventLines.append(ConntrackFormatter.event(kind, entry, now: now))
            }
        }
        let reader = try CaptureReader(path: path)
        var report = Report()
        var pending: [Int: (PacketSummary.Fields, TrackResult?)] = [:]
        var nextToPrint = 1
        var now: UInt64 = 0
        var lastExpiry: UInt64 = 0

        func flushReady() {
            for line in eventLines { emit(line) }
            eventLines.removeAll(keepingCapacity: true)
            while let (fields, result) = pending[nextToPrint], let state = result {
                emit(Self.line(index: nextToPrint, fields: fields, result: state, format: format))
                report.states[nextToPrint] = state
                pending[nextToPrint] = nil
                nextToPrint += 1
            }
        }
        let deliver: (UInt64, TrackResult) -> Void = { token, result in
            pending[Int(token)]?.1 = result
        }

        while let record = try reader.next() {
            report.packets += 1
            let index = record.number
            now = max(now, record.timestampNanoseconds)
            do throws(ParseError) {
                let packet = try Packet(record.bytes, linkType: record.linkType)
                pending[index] = (PacketSummary.describe(packet), nil)
                frontEnd.process(packet, zone: zone, now: now, token: UInt64(index), deliver: deliver)
            } catch {
                var fields = PacketSummary.Fields(proto: "malformed", text: "malformed: \(error)")
                fields.proto = "malformed"
                pending[index] = (fields, .invalid(.malformed, zone: zone))
            }
            if now &- lastExpiry >= 1_000_000_000 {
                frontEnd.expire(now: now, deliver: deliver)
                lastExpiry = now
            }
            flushReady()
        }
        frontEnd.flush(deliver: deliver)
        flushReady()
        if list {
            tracker.forEachEntry { _, entry in emit(ConntrackFormatter.line(entry, now: now)) }
        }
        return report
    }

    static func line(index: Int, fields: PacketSummary.Fields, result: TrackResult, format: OutputFormat) -> String {
        switch format {
        case .text:
            var text = "\(index) \(result.state) \(fields.text)"
            if let reason = result.invalidReason { text += " (\(reason))" }
            return text
        case .json:
            var json =
                "{\"index\":\(index),\"ct_state\":["
                + result.state.flagNames.map { jsonString($0) }.joined(separator: ",")
            json += "],\"zone\":\(result.zone),\"proto\":\(jsonString(fields.proto))"
            json += ",\"src\":" + (fields.source.map(jsonString) ?? "null")
            json += ",\"dst\":" + (fields.destination.map(jsonString) ?? "null")
            json += ",\"sport\":" + (fields.sourcePort.map { String($0) } ?? "null")
            json += ",\"dport\":" + (fields.destinationPort.map { String($0) } ?? "null")
            if let reason = result.invalidReason { json += ",\"invalid_reason\":\(jsonString(reason.description))" }
            json += ",\"summary\":\(jsonString(fields.text))}"
            return json
        }
    }
}

/// Buffered standard output: one write per 64 KiB instead of one per line.
struct StandardOutput {
    private var buffer: [UInt8] = []

    mutating func write(_ line: String) {
        buffer.append(contentsOf: line.utf8)
        buffer.append(0x0A)
        if buffer.count >= 65536 { flush() }
    }

    mutating func flush() {
        var offset = 0
        while offset < buffer.count {
            let written = buffer[offset...].withUnsafeBytes { Glibc.write(1, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                break
            }
            offset += written
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

enum StandardError {
    static func line(_ text: String) {
        let bytes = Array((text + "\n").utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
