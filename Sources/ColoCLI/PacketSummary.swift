import ColoConntrack
import ColoPacket
import ColoStages

/// One-line descriptions of packets, in the spirit of tcpdump's, for the `conntrack` and `replay` outputs.
enum PacketSummary {
    struct Fields {
        var proto: String
        var source: String?
        var destination: String?
        var sourcePort: UInt16?
        var destinationPort: UInt16?
        var text: String
    }

    static func describe(_ packet: Packet) -> Fields {
        let layout = packet.layout
        if layout.network == .arp, let arp = packet.arp {
            let sender = arp.senderIPv4?.description ?? "?"
            let target = arp.targetIPv4?.description ?? "?"
            let text =
                arp.operation == 1
                ? "arp who-has \(target) tell \(sender)"
                : "arp reply \(sender) is-at \(arp.senderMAC?.description ?? "?")"
            return Fields(proto: "arp", source: sender, destination: target, text: text)
        }
        guard layout.isIP, let source = packet.sourceAddress, let destination = packet.destinationAddress else {
            return Fields(proto: String(format4(layout.etherType)), text: "ethertype \(format4(layout.etherType))")
        }
        let proto =
            IPProtocol.name(layout.transportProtocol) == "unknown"
            ? "ip-proto-\(layout.transportProtocol)" : IPProtocol.name(layout.transportProtocol)
        var fields = Fields(proto: proto, source: source.description, destination: destination.description, text: "")
        var fragment = ""
        if layout.isFragment {
            fragment = " frag id=\(layout.fragmentID) off=\(layout.fragmentOffset)\(layout.moreFragments ? " mf" : "")"
        }
        if let tcp = packet.tcp {
            fields.sourcePort = tcp.sourcePort
            fields.destinationPort = tcp.destinationPort
            fields.text =
                "\(proto) \(endpoint(source, tcp.sourcePort)) > \(endpoint(destination, tcp.destinationPort)) [\(tcp.flags)]"
            if !tcp.payload.isEmpty { fields.text += " len=\(tcp.payload.count)" }
        } else if let udp = packet.udp {
            fields.sourcePort = udp.sourcePort
            fields.destinationPort = udp.destinationPort
            fields.text = "\(proto) \(endpoint(source, udp.sourcePort)) > \(endpoint(destination, udp.destinationPort))"
        } else if let icmp = packet.icmpv4 {
            fields.text = "\(proto) \(source) > \(destination) \(icmpName(icmp.type, v6: false))"
            if icmp.isQuery { fields.text += " id=\(icmp.identifier)" } else { fields.text += " code=\(icmp.code)" }
        } else if let icmp = packet.icmpv6 {
            fields.text = "\(proto) \(source) > \(destination) \(icmpName(icmp.type, v6: true))"
            if icmp.type == 128 || icmp.type == 129 {
                fields.text += " id=\(icmp.identifier)"
            } else {
                fields.text += " code=\(icmp.code)"
            }
        } else {
            fields.text = "\(proto) \(source) > \(destination)"
        }
        fields.text += fragment
        return fields
    }

    static func endpoint(_ address: IPAddress, _ port: UInt16) -> String {
        switch address {
        case .v4(let a): "\(a):\(port)"
        case .v6(let a): "[\(a)]:\(port)"
        }
    }

    static func icmpName(_ type: UInt8, v6: Bool) -> String {
        if v6 {
            switch type {
            case 1: return "unreachable"
            case 2: return "packet-too-big"
            case 3: return "time-exceeded"
            case 4: return "parameter-problem"
            case 128: return "echo-request"
            case 129: return "echo-reply"
            case 133: return "router-solicitation"
            case 134: return "router-advertisement"
            case 135: return "neighbor-solicitation"
            case 136: return "neighbor-advertisement"
            default: return "type=\(type)"
            }
        }
        switch type {
        case 0: return "echo-reply"
        case 3: return "unreachable"
        case 4: return "source-quench"
        case 5: return "redirect"
        case 8: return "echo-request"
        case 11: return "time-exceeded"
        case 12: return "parameter-problem"
        case 13: return "timestamp-request"
        case 14: return "timestamp-reply"
        default: return "type=\(type)"
        }
    }

    static func format4(_ value: UInt16) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}

/// A JSON string literal; the same escaping as the divergence events.
func jsonString(_ text: String) -> String { DivergenceEvent.quote(text) }
