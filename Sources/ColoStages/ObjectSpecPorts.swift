/// A port as `--port KIND,id=ID,key=value,...` gives it (SPEC §1), typed and checked key by key.
///
/// The kind may also be given as `type=KIND`, as QEMU's `-netdev` takes it. `specText` parses back to an equal spec.
public enum PortSpec: Hashable, Sendable, CustomStringConvertible {
    case tap(TapPortSpec)
    case tun(TunPortSpec)
    case socket(SocketPortSpec)
    case nfqueue(NFQueuePortSpec)
    case pcap(PcapPortSpec)

    public static func parse(_ text: String) throws(ObjectSpecError) -> PortSpec {
        guard !text.isEmpty else { throw .emptySpec(.port) }
        return try parse(SpecSyntax.split(text, impliedKey: ObjectSpecError.Family.port.kindKey))
    }

    /// Parses a spec whose options are already split (a config file's table); values are text.
    public static func parse(kind: String, options: [(key: String, value: String)]) throws(ObjectSpecError)
        -> PortSpec
    {
        let kindOption = SpecOption(key: ObjectSpecError.Family.port.kindKey, value: kind)
        return try parse([kindOption] + options.map { SpecOption(key: $0.key, value: $0.value) })
    }

    private static func parse(_ options: [SpecOption]) throws(ObjectSpecError) -> PortSpec {
        let resolved = try ResolvedKind<PortKind>(options, family: .port)
        let checked = try CheckedOptions(resolved.options, schema: resolved.kind.schema, subject: resolved.subject)
        switch resolved.kind {
        case .tap: return .tap(try TapPortSpec(checked))
        case .tun: return .tun(try TunPortSpec(checked))
        case .socket: return .socket(try SocketPortSpec(checked))
        case .nfqueue: return .nfqueue(try NFQueuePortSpec(checked))
        case .pcap: return .pcap(try PcapPortSpec(checked))
        }
    }

    public var kind: PortKind {
        switch self {
        case .tap: .tap
        case .tun: .tun
        case .socket: .socket
        case .nfqueue: .nfqueue
        case .pcap: .pcap
        }
    }

    public var id: String {
        switch self {
        case .tap(let spec): spec.id
        case .tun(let spec): spec.id
        case .socket(let spec): spec.id
        case .nfqueue(let spec): spec.id
        case .pcap(let spec): spec.id
        }
    }

    /// The canonical text: kind, `id`, then the other keys in schema order, only those that differ from their
    /// defaults, commas in values doubled.
    public var specText: String {
        let values: [String: String]
        switch self {
        case .tap(let spec): values = spec.specValues
        case .tun(let spec): values = spec.specValues
        case .socket(let spec): values = spec.specValues
        case .nfqueue(let spec): values = spec.specValues
        case .pcap(let spec): values = spec.specValues
        }
        return kind.schema.render(values)
    }

    public var description: String { specText }

    var subject: ObjectSpecError.Subject { ObjectSpecError.Subject(kind: kind.rawValue, id: id) }
}

/// The port kinds `--port` accepts.
public enum PortKind: String, CaseIterable, Hashable, Sendable {
    case tap, tun, socket, nfqueue, pcap

    public var schema: ObjectSpecSchema {
        switch self {
        case .tap: Self.tapSchema
        case .tun: Self.tunSchema
        case .socket: Self.socketSchema
        case .nfqueue: Self.nfqueueSchema
        case .pcap: Self.pcapSchema
        }
    }

    private typealias Key = ObjectSpecSchema.Key
    private static let id = Key("id", .identifier, required: true)

    private static let tapSchema = ObjectSpecSchema(
        kind: "tap",
        keys: [id, Key("ifname", .interfaceName, required: true), Key("vnet_hdr", .boolean), Key("offload", .boolean)])
    private static let tunSchema = ObjectSpecSchema(
        kind: "tun", keys: [id, Key("ifname", .interfaceName, required: true)])
    private static let socketSchema = ObjectSpecSchema(
        kind: "socket",
        keys: [
            id,
            // sun_path holds 108 bytes with the terminating NUL.
            Key("path", .path(maxBytes: 107, accepted: "a Unix socket path of at most 107 bytes")),
            Key("host", .host),
            Key("port", .wholeNumber(0...65535, accepted: SocketPortSpec.acceptedPort)),
            Key("server", .boolean),
            Key("reconnect", .wholeNumber(0...UInt64(UInt32.max), accepted: "a whole number of seconds (0: never)")),
            Key("vnet_hdr_support", .boolean),
        ])
    private static let nfqueueSchema = ObjectSpecSchema(
        kind: "nfqueue",
        keys: [
            id,
            Key("queue", .wholeNumber(0...65535, accepted: "a queue number from 0 to 65535")),
            Key("fail_open", .boolean),
            Key(
                "maxlen",
                .wholeNumber(1...UInt64(UInt32.max), accepted: "a whole number of packets from 1 to 4294967295")),
        ])
    private static let pcapSchema = ObjectSpecSchema(
        kind: "pcap",
        keys: [
            id, Key("file", .path(maxBytes: 4095, accepted: "a file path"), required: true),
            Key("mode", .choice(PcapPortSpec.Mode.allCases.map(\.rawValue)), required: true),
        ])
}

/// A TAP device (Ethernet frames): the proxy opens /dev/net/tun with IFF_TAP|IFF_NO_PI on `interfaceName`.
public struct TapPortSpec: Hashable, Sendable {
    public var id: String
    /// Required: a port is useful only on an interface something else attaches to by name.
    public var interfaceName: String
    /// Frames carry a virtio-net header (IFF_VNET_HDR).
    public var vnetHeader: Bool
    /// `offload=on`: the interface offers checksum and TCP segmentation offload to its stack (as a virtio NIC with
    /// those features does), so it hands the proxy partial checksums and TCP segments of up to 64 KiB, compared as
    /// the byte streams they are and forwarded with their virtio-net header. Implies `vnet_hdr`.
    public var offload: Bool

    public init(id: String, interfaceName: String, vnetHeader: Bool = false, offload: Bool = false) {
        self.id = id
        self.interfaceName = interfaceName
        self.vnetHeader = vnetHeader || offload
        self.offload = offload
    }

    init(_ checked: CheckedOptions) throws(ObjectSpecError) {
        self.init(
            id: try checked.required("id"), interfaceName: try checked.required("ifname"),
            vnetHeader: checked.flag("vnet_hdr") ?? false, offload: checked.flag("offload") ?? false)
    }

    var specValues: [String: String] {
        var values = ["id": id, "ifname": interfaceName]
        if vnetHeader { values["vnet_hdr"] = "on" }
        if offload { values["offload"] = "on" }
        return values
    }
}

/// A TUN device (raw IP packets) on `interfaceName`.
public struct TunPortSpec: Hashable, Sendable {
    public var id: String
    public var interfaceName: String

    public init(id: String, interfaceName: String) {
        self.id = id
        self.interfaceName = interfaceName
    }

    init(_ checked: CheckedOptions) throws(ObjectSpecError) {
        self.init(id: try checked.required("id"), interfaceName: try checked.required("ifname"))
    }

    var specValues: [String: String] { ["id": id, "ifname": interfaceName] }
}

/// A stream socket carrying Ethernet frames in QEMU's chardev framing (WIRE.md §1), as client or server.
public struct SocketPortSpec: Hashable, Sendable {
    /// Where the socket is: a Unix path (`path=`) or a TCP host and port (`host=`, `port=`).
    public enum Endpoint: Hashable, Sendable {
        case unix(path: String)
        /// Port 0 only for a server: it listens on a port the kernel picks.
        case tcp(host: String, port: UInt16)
    }

    public var id: String
    public var endpoint: Endpoint
    /// Listen (`on`) or connect (`off`).
    public var server: Bool
    /// A client's wait before connecting again after the connection drops; 0: the port stays down.
    public var reconnectSeconds: UInt32
    /// Frames carry the vnet header length field; both ends must agree out of band.
    public var vnetHeaderSupport: Bool

    public init(
        id: String, endpoint: Endpoint, server: Bool = false, reconnectSeconds: UInt32 = 0,
        vnetHeaderSupport: Bool = false
    ) {
        self.id = id
        self.endpoint = endpoint
        self.server = server
        self.reconnectSeconds = reconnectSeconds
        self.vnetHeaderSupport = vnetHeaderSupport
    }

    static let acceptedPort = "a TCP port from 1 to 65535 (0 with server=on: any free port)"

    init(_ checked: CheckedOptions) throws(ObjectSpecError) {
        let subject = checked.subject
        let path = checked.text("path")
        let host = checked.text("host")
        let port = try checked.number("port", as: UInt16.self)
        let server = checked.flag("server") ?? false
        let endpoint: Endpoint
        switch (path, host, port) {
        case (let path?, nil, nil):
            endpoint = .unix(path: path)
        case (nil, let host?, let port?):
            if port == 0, !server {
                throw .badValue(subject, key: "port", value: "0", accepted: Self.acceptedPort)
            }
            endpoint = .tcp(host: host, port: port)
        case (nil, nil, nil):
            throw .conflictingKeys(subject, detail: "give either path= or host= and port=")
        case (nil, nil, _?):
            throw .missingKey(subject, key: "host")
        case (nil, _?, nil):
            throw .missingKey(subject, key: "port")
        case (_?, _, _):
            throw .conflictingKeys(subject, detail: "give either path= or host= and port=, not both")
        }
        self.init(
            id: try checked.required("id"), endpoint: endpoint, server: server,
            reconnectSeconds: try checked.number("reconnect", as: UInt32.self) ?? 0,
            vnetHeaderSupport: checked.flag("vnet_hdr_support") ?? false)
        if server, reconnectSeconds > 0 {
            throw .conflictingKeys(subject, detail: "reconnect= needs server=off (a server waits for its peer)")
        }
    }

    var specValues: [String: String] {
        var values = ["id": id]
        switch endpoint {
        case .unix(let path):
            values["path"] = path
        case .tcp(let host, let port):
            values["host"] = host
            values["port"] = String(port)
        }
        if server { values["server"] = "on" }
        if reconnectSeconds != 0 { values["reconnect"] = String(reconnectSeconds) }
        if vnetHeaderSupport { values["vnet_hdr_support"] = "on" }
        return values
    }
}

/// A netfilter queue (raw IP); primary→client packets wait in the kernel for their verdict (SPEC §1.1).
public struct NFQueuePortSpec: Hashable, Sendable {
    public var id: String
    /// iptables' `--queue-num`; 0 by default, as there.
    public var queueNumber: UInt16
    /// Accept packets while the proxy is gone or the queue is full, rather than drop them.
    public var failOpen: Bool
    /// The kernel's queue length, which bounds the packets held for verdicts.
    public var maxLength: UInt32

    public init(id: String, queueNumber: UInt16 = 0, failOpen: Bool = false, maxLength: UInt32 = 1024) {
        self.id = id
        self.queueNumber = queueNumber
        self.failOpen = failOpen
        self.maxLength = maxLength
    }

    init(_ checked: CheckedOptions) throws(ObjectSpecError) {
        self.init(
            id: try checked.required("id"), queueNumber: try checked.number("queue", as: UInt16.self) ?? 0,
            failOpen: checked.flag("fail_open") ?? false,
            maxLength: try checked.number("maxlen", as: UInt32.self) ?? 1024)
    }

    var specValues: [String: String] {
        var values = ["id": id]
        if queueNumber != 0 { values["queue"] = String(queueNumber) }
        if failOpen { values["fail_open"] = "on" }
        if maxLength != 1024 { values["maxlen"] = String(maxLength) }
        return values
    }
}

/// A capture file: read (pcap or pcapng) as a packet source, or written (pcap) as a sink.
public struct PcapPortSpec: Hashable, Sendable {
    /// Required, with no default: `write` truncates the file, so reading must never be mistaken for it.
    public enum Mode: String, CaseIterable, Hashable, Sendable {
        case read, write
    }

    public var id: String
    public var file: String
    public var mode: Mode

    public init(id: String, file: String, mode: Mode) {
        self.id = id
        self.file = file
        self.mode = mode
    }

    init(_ checked: CheckedOptions) throws(ObjectSpecError) {
        guard let mode = try checked.choice("mode", as: Mode.self) else {
            throw .missingKey(checked.subject, key: "mode")
        }
        self.init(id: try checked.required("id"), file: try checked.required("file"), mode: mode)
    }

    var specValues: [String: String] { ["id": id, "file": file, "mode": mode.rawValue] }
}
