import ColoPacket

/// `conntrack -L` and `conntrack -E` text for entries (CONNTRACK.md "Listing and events").
public enum ConntrackFormatter {
    /// One `conntrack -L` line. `now` gives the seconds left.
    public static func line(_ entry: ConnectionEntry, now: UInt64) -> String {
        let key = entry.key
        let name = IPProtocol.name(key.protocolNumber)
        var parts: [String] = [pad(name, 8), String(key.protocolNumber)]
        let left = entry.expiresAt > now ? (entry.expiresAt - now) / 1_000_000_000 : 0
        parts.append(String(left))
        if key.protocolNumber == IPProtocol.tcp { parts.append(entry.tcpState.description) }
        parts.append(tuple(key))
        if !entry.status.contains(.seenReply) { parts.append("[UNREPLIED]") }
        parts.append(tuple(key.reversed()))
        if entry.status.contains(.assured) { parts.append("[ASSURED]") }
        parts.append("zone=\(key.zone)")
        parts.append("use=1")
        return parts.joined(separator: " ")
    }

    /// One `conntrack -E` line: the event tag right-aligned to 9 characters, then the listing line.
    public static func event(_ kind: ConntrackEventKind, _ entry: ConnectionEntry, now: UInt64) -> String {
        let tag = "[\(kind.rawValue)]"
        return String(repeating: " ", count: max(0, 9 - tag.count)) + tag + " " + line(entry, now: now)
    }

    static func tuple(_ key: FlowKey) -> String {
        var text = "src=\(key.sourceAddress) dst=\(key.destinationAddress)"
        if key.isICMP {
            text += " type=\(key.destinationPort) code=0 id=\(key.sourcePort)"
        } else if key.sourcePort != 0 || key.destinationPort != 0 {
            text += " sport=\(key.sourcePort) dport=\(key.destinationPort)"
        }
        return text
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}
