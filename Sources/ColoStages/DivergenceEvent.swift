import ColoPacket

/// Why the replicas were found to differ (SPEC §5).
public enum DivergenceReason: String, Sendable, CaseIterable {
    case payload
    case length
    case secondaryTimeout = "secondary-timeout"
    case queueOverflow = "queue-overflow"
    case `protocol`
}

/// What the comparer did about a divergence.
public enum DivergenceAction: String, Sendable {
    /// Held the connection's packets and asked the controller for a checkpoint.
    case checkpoint
    /// Logged it and released the primary's packets.
    case release
}

/// One side's diverging packet, as the event shows it.
public struct DivergenceSide: Sendable, Equatable {
    /// TCP sequence number (the secondary's after rewriting); nil for other protocols.
    public var seq: UInt32?
    /// Payload length (TCP/UDP/ICMP) or frame length.
    public var length: Int
    /// The payload (or frame) bytes, up to `DivergenceEvent.maxHexBytes`.
    public var bytes: [UInt8]
    /// The whole frame, for `--divergence-pcap`.
    public var frame: [UInt8]
    public var linkType: LinkType
    public var timestamp: UInt64
}

/// A divergence, with everything the JSON line and the divergence capture need.
public struct DivergenceEvent: Sendable, Equatable {
    /// Hex dumps in events stop after this many bytes of each side.
    public static let maxHexBytes = 2048

    /// Nanoseconds since the Unix epoch.
    public var time: UInt64
    public var reason: DivergenceReason
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `arp`, or the protocol's name/number.
    public var proto: String
    /// `ipv4`, `ipv6`, or `none` for frames without IP.
    public var family: String
    public var source: String?
    public var sourcePort: UInt16?
    public var destination: String?
    public var destinationPort: UInt16?
    /// TCP: offset of the first differing byte in the primary's stream, counted from the first byte after SYN.
    public var streamOffset: UInt64?
    public var primary: DivergenceSide?
    public var secondary: DivergenceSide?
    public var action: DivergenceAction

    /// The event as one JSON line (SPEC §5).
    public var json: String {
        var out =
            "{\"time\":\(Self.quote(Self.iso8601(time))),\"event\":\"divergence\",\"reason\":\(Self.quote(reason.rawValue))"
        out += ",\"proto\":\(Self.quote(proto)),\"family\":\(Self.quote(family))"
        if let source, let destination {
            out += ",\"flow\":{\"src\":\(Self.quote(source))"
            if let sourcePort { out += ",\"sport\":\(sourcePort)" }
            out += ",\"dst\":\(Self.quote(destination))"
            if let destinationPort { out += ",\"dport\":\(destinationPort)" }
            out += "}"
        }
        if let streamOffset { out += ",\"stream_offset\":\(streamOffset)" }
        for (name, side) in [("primary", primary), ("secondary", secondary)] {
            guard let side else { continue }
            out += ",\"\(name)\":{"
            if let seq = side.seq { out += "\"seq\":\(seq)," }
            out += "\"len\":\(side.length),\"hex\":\(Self.quote(Self.hex(side.bytes)))}"
        }
        out += ",\"action\":\(Self.quote(action.rawValue))}"
        return out
    }

    /// One line for people: what diverged, where, and what was done.
    public var summary: String {
        var flow = proto
        if let source, let destination {
            flow +=
                " \(source)\(sourcePort.map { ":\($0)" } ?? "") > \(destination)\(destinationPort.map { ":\($0)" } ?? "")"
        }
        var text = "divergence (\(reason.rawValue)) on \(flow)"
        if let streamOffset { text += " at stream offset \(streamOffset)" }
        text += ": \(action.rawValue)"
        return text
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// `text` as a JSON string literal (quotes and escapes), for the one-line JSON outputs.
    public static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// `2026-11-21T18:00:00.123456Z` from nanoseconds since the epoch (civil-from-days, no Foundation).
    static func iso8601(_ nanoseconds: UInt64) -> String {
        let seconds = Int64(nanoseconds / 1_000_000_000)
        let micros = Int64(nanoseconds % 1_000_000_000) / 1000
        let days = seconds / 86400
        let secondOfDay = seconds % 86400
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        var year = yearOfEra + era * 400
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        if month <= 2 { year += 1 }
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):"
            + "\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2)).\(pad(micros, 6))Z"
    }
}
