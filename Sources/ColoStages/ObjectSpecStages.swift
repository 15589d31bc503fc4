/// Which of a port's packets a stage sees (QEMU's `queue=`): `rx` those the port receives from the proxy (toward the
/// guest or network behind it), `tx` those the port hands to the proxy, `all` both (SPEC §2).
public enum QueueDirection: String, CaseIterable, Hashable, Sendable {
    case rx, tx, all
}

/// Whether a stage acts (`on`) or passes packets on untouched (`off`); QMP `filter-set-status` flips it at run time.
public enum StageStatus: String, CaseIterable, Hashable, Sendable {
    case on, off
}

/// Where a filter goes in its port's chain (QEMU's `position=`): first, last, or next to another filter.
/// Recorded as given; chains are built in command-line order, which is QEMU's default (`tail`).
public enum FilterPosition: Hashable, Sendable {
    case head
    case tail
    case filter(id: String)

    /// Parses `head`, `tail` or `id=ID`.
    public init?(specValue: String) {
        switch specValue {
        case "head": self = .head
        case "tail": self = .tail
        default:
            guard specValue.hasPrefix("id=") else { return nil }
            let id = String(specValue.dropFirst(3))
            guard isIdentifier(id) else { return nil }
            self = .filter(id: id)
        }
    }

    public var specValue: String {
        switch self {
        case .head: "head"
        case .tail: "tail"
        case .filter(let id): "id=\(id)"
        }
    }
}

/// With `position=id=ID`, whether the filter goes before or behind that filter (QEMU's `insert=`).
public enum FilterInsertion: String, CaseIterable, Hashable, Sendable {
    case before, behind
}

/// What every netdev filter shares: the port it hangs on and how it sits in that port's chain.
public struct FilterAttachment: Hashable, Sendable {
    /// The port whose packets the filter sees (QEMU's netdev id).
    public var netdev: String
    public var queue: QueueDirection
    public var status: StageStatus
    public var position: FilterPosition
    public var insert: FilterInsertion

    public init(
        netdev: String, queue: QueueDirection = .all, status: StageStatus = .on, position: FilterPosition = .tail,
        insert: FilterInsertion = .behind
    ) {
        self.netdev = netdev
        self.queue = queue
        self.status = status
        self.position = position
        self.insert = insert
    }

    init(_ checked: CheckedOptions) throws(ObjectSpecError) {
        self.init(netdev: try checked.required("netdev"))
        queue = try checked.choice("queue", as: QueueDirection.self) ?? .all
        status = try checked.choice("status", as: StageStatus.self) ?? .on
        position = try checked.converted("position", FilterPosition.init(specValue:)) ?? .tail
        insert = try checked.choice("insert", as: FilterInsertion.self) ?? .behind
    }

    /// The keys whose values differ from the defaults, plus `netdev`.
    var specValues: [String: String] {
        var values = ["netdev": netdev]
        if queue != .all { values["queue"] = queue.rawValue }
        if status != .on { values["status"] = status.rawValue }
        if position != .tail { values["position"] = position.specValue }
        if insert != .behind { values["insert"] = insert.rawValue }
        return values
    }
}

/// `filter-mirror`: copies each packet the filter sees to `outdev`; the original goes on.
public struct MirrorSpec: Hashable, Sendable {
    public var id: String
    public var attachment: FilterAttachment
    /// A port, or an internal channel that another stage reads (see `ObjectSpec.validate`).
    public var outdev: String
    /// Frames on `outdev` carry the vnet header length field (WIRE.md §1).
    public var vnetHeaderSupport: Bool

    public init(id: String, attachment: FilterAttachment, outdev: String, vnetHeaderSupport: Bool = false) {
        self.id = id
        self.attachment = attachment
        self.outdev = outdev
        self.vnetHeaderSupport = vnetHeaderSupport
    }

    init(_ checked: CheckedOptions) throws(ObjectSpecError) {
        self.init(
            id: try checked.required("id"), attachment: try FilterAttachment(checked),
            outdev: try checked.required("outdev"), vnetHeaderSupport: checked.flag("vnet_hdr_support") ?? false)
    }

    var specValues: [String: String] {
        var values = attachment.specValues.merging(["id": id, "outdev": outdev]) { _, new in new }
        if vnetHeaderSupport { values["vnet_hdr_support"] = "on" }
        return values
    }
}

/// `filter-redirector`: sends the packets it sees to `outdev` instead of onward, and/or injects packets read from
/// `indev` into the port's chain. At least one of the two is set, and they differ.
public struct RedirectorSpec: Hashable, Sendable {
    public var id: String
    public var attachment: FilterAttachment
    public var indev: String?
    public var outdev: String?
    public var vnetHeaderSupport: Bool

    public init(
        id: String, attachment: FilterAttachment, indev: String?, outdev: String?, vnetHeaderSupport: Bool = false
    ) {
        self.id = id
        self.attachment = attachment
        self.indev = indev
        self.outdev = outdev
        self.vnetHeaderSupport = vnetHeaderSupport
    }

    init(_ checked: CheckedOptions) throws(ObjectSpecError) {
        self.init(
            id: try checked.required("id"), attachment: try FilterAttachment(checked), indev: checked.text("indev"),
            outdev: checked.text("outdev"), vnetHeaderSupport: checked.flag("vnet_hdr_support") ?? false)
        if indev == nil, outdev == nil {
            throw .conflictingKeys(checked.subject, detail: "give indev=, outdev= or both")
        }
        if let indev, indev == outdev {
            throw .conflictingKeys(checked.subject, detail: "indev and outdev must differ (both '\(indev)')")
        }
    }

    var specValues: [String: String] {
        var values = attachment.specValues
        values["id"] = id
        values["indev"] = indev
        values["outdev"] = outdev
        if vnetHeaderSupport { values["vnet_hdr_support"] = "on" }
        return values
    }
}

/// `filter-rewriter`: keeps each connection's sequence offset and rewrites the secondary's seq/ack (SPEC §4).
public struct RewriterSpec: Hashable, Sendable {
    public var id: String
    public var attachment: FilterAttachment
    /// Accepted as QEMU's filter-rewriter accepts it; packets reach the rewriter already unframed.
    public var vnetHeaderSupport: Bool

    public init(id: String, attachment: FilterAttachment, vnetHeaderSupport: Bool = false) {
        self.id = id
        self.attachment = attachment
        self.vnetHeaderSupport = vnetHeaderSupport
    }

    init(_ checked: CheckedOptions) throws(ObjectSpecError) {
        self.init(
            id: try checked.required("id"), attachment: try FilterAttachment(checked),
            vnetHeaderSupport: checked.flag("vnet_hdr_support") ?? false)
    }

    var specValues: [String: String] {
        var values = attachment.specValues
        values["id"] = id
        if vnetHeaderSupport { values["vnet_hdr_support"] = "on" }
        return values
    }
}

/// `colo-compare`: compares the primary's and the secondary's output and releases the primary's (SPEC §3).
public struct CompareSpec: Hashable, Sendable {
    public var id: String
    public var primaryIn: String
    public var secondaryIn: String
    public var outdev: String
    /// The checkpoint controller's channel (Xen COLO, WIRE.md §1); a socket port.
    public var notifyDev: String?
    /// QEMU needs one; the proxy runs compare on its own workers, so it only keeps the name to echo it.
    public var iothread: String?
    public var compareTimeoutMilliseconds: UInt64
    public var expiredScanCycleMilliseconds: UInt64
    public var maxQueueSize: Int
    public var vnetHeaderSupport: Bool
    /// Given or defaulted: `checkpoint` when there is a `notifyDev` to ask, `release` otherwise.
    public var onDivergence: DivergenceAction

    public init(
        id: String, primaryIn: String, secondaryIn: String, outdev: String, notifyDev: String? = nil,
        iothread: String? = nil, compareTimeoutMilliseconds: UInt64 = 3000, expiredScanCycleMilliseconds: UInt64 = 1000,
        maxQueueSize: Int = 1024, vnetHeaderSupport: Bool = false, onDivergence: DivergenceAction? = nil
    ) {
        self.id = id
        self.primaryIn = primaryIn
        self.secondaryIn = secondaryIn
        self.outdev = outdev
        self.notifyDev = notifyDev
        self.iothread = iothread
        self.compareTimeoutMilliseconds = compareTimeoutMilliseconds
        self.expiredScanCycleMilliseconds = expiredScanCycleMilliseconds
        self.maxQueueSize = maxQueueSize
        self.vnetHeaderSupport = vnetHeaderSupport
        self.onDivergence = onDivergence ?? Self.defaultOnDivergence(notifyDev: notifyDev)
    }

    static func defaultOnDivergence(notifyDev: String?) -> DivergenceAction {
        notifyDev == nil ? .release : .checkpoint
    }

    /// Spelled out rather than derived, so that a new `DivergenceAction` case must be decided on here.
    static let divergenceChoices: [String] = [DivergenceAction.checkpoint, .release].map(\.rawValue)

    init(_ checked: CheckedOptions) throws(ObjectSpecError) {
        self.init(
            id: try checked.required("id"), primaryIn: try checked.required("primary_in"),
            secondaryIn: try checked.required("secondary_in"), outdev: try checked.required("outdev"),
            notifyDev: checked.text("notify_dev"), iothread: checked.text("iothread"),
            compareTimeoutMilliseconds: try checked.number("compare_timeout", as: UInt64.self) ?? 3000,
            expiredScanCycleMilliseconds: try checked.number("expired_scan_cycle", as: UInt64.self) ?? 1000,
            maxQueueSize: try checked.number("max_queue_size", as: Int.self) ?? 1024,
            vnetHeaderSupport: checked.flag("vnet_hdr_support") ?? false,
            onDivergence: try checked.choice("on_divergence", as: DivergenceAction.self))
        if primaryIn == secondaryIn {
            throw .conflictingKeys(
                checked.subject, detail: "primary_in and secondary_in must differ (both '\(primaryIn)')")
        }
    }

    var specValues: [String: String] {
        var values = ["id": id, "primary_in": primaryIn, "secondary_in": secondaryIn, "outdev": outdev]
        values["notify_dev"] = notifyDev
        values["iothread"] = iothread
        if compareTimeoutMilliseconds != 3000 { values["compare_timeout"] = String(compareTimeoutMilliseconds) }
        if expiredScanCycleMilliseconds != 1000 {
            values["expired_scan_cycle"] = String(expiredScanCycleMilliseconds)
        }
        if maxQueueSize != 1024 { values["max_queue_size"] = String(maxQueueSize) }
        if vnetHeaderSupport { values["vnet_hdr_support"] = "on" }
        if onDivergence != Self.defaultOnDivergence(notifyDev: notifyDev) {
            values["on_divergence"] = onDivergence.rawValue
        }
        return values
    }
}

/// `conntrack`: tracks the connections of the packets it sees (CONNTRACK.md) in `zone`.
public struct ConntrackSpec: Hashable, Sendable {
    public var id: String
    public var attachment: FilterAttachment
    public var zone: UInt16
    /// Whether new connections enter the table (OVS `ct(commit)`); off only classifies.
    public var commit: Bool

    public init(id: String, attachment: FilterAttachment, zone: UInt16 = 0, commit: Bool = true) {
        self.id = id
        self.attachment = attachment
        self.zone = zone
        self.commit = commit
    }

    init(_ checked: CheckedOptions) throws(ObjectSpecError) {
        self.init(
            id: try checked.required("id"), attachment: try FilterAttachment(checked),
            zone: try checked.number("zone", as: UInt16.self) ?? 0, commit: checked.flag("commit") ?? true)
    }

    var specValues: [String: String] {
        var values = attachment.specValues
        values["id"] = id
        if zone != 0 { values["zone"] = String(zone) }
        if !commit { values["commit"] = "off" }
        return values
    }
}

/// `filter-dump`: writes the packets it sees to a pcap `file`, each cut to `maxLength` bytes (QEMU's `maxlen`).
public struct DumpSpec: Hashable, Sendable {
    public var id: String
    public var attachment: FilterAttachment
    public var file: String
    public var maxLength: UInt32

    /// QEMU filter-dump's default snap length.
    public static let defaultMaxLength: UInt32 = 65536

    public init(id: String, attachment: FilterAttachment, file: String, maxLength: UInt32 = DumpSpec.defaultMaxLength) {
        self.id = id
        self.attachment = attachment
        self.file = file
        self.maxLength = maxLength
    }

    init(_ checked: CheckedOptions) throws(ObjectSpecError) {
        self.init(
            id: try checked.required("id"), attachment: try FilterAttachment(checked),
            file: try checked.required("file"),
            maxLength: try checked.number("maxlen", as: UInt32.self) ?? Self.defaultMaxLength)
    }

    var specValues: [String: String] {
        var values = attachment.specValues
        values["id"] = id
        values["file"] = file
        if maxLength != Self.defaultMaxLength { values["maxlen"] = String(maxLength) }
        return values
    }
}
