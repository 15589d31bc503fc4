/// A stage as `--object KIND,id=ID,key=value,...` gives it (QEMU's `-object` syntax), typed and checked key by key.
///
/// `parse` checks one spec on its own; `validate(objects:ports:)` checks a whole set (unique ids, references).
/// `specText` renders the canonical text, which parses back to an equal spec.
public enum ObjectSpec: Hashable, Sendable, CustomStringConvertible {
    case mirror(MirrorSpec)
    case redirector(RedirectorSpec)
    case rewriter(RewriterSpec)
    case compare(CompareSpec)
    case conntrack(ConntrackSpec)
    case dump(DumpSpec)

    /// Parses `KIND,id=ID,key=value,...`; the kind may also be given as `qom-type=KIND` anywhere in the list.
    public static func parse(_ text: String) throws(ObjectSpecError) -> ObjectSpec {
        guard !text.isEmpty else { throw .emptySpec(.object) }
        return try parse(SpecSyntax.split(text, impliedKey: ObjectSpecError.Family.object.kindKey))
    }

    /// Parses a spec whose options are already split (a config file's table); values are text as on the command
    /// line (`on`, `3000`).
    public static func parse(kind: String, options: [(key: String, value: String)]) throws(ObjectSpecError)
        -> ObjectSpec
    {
        let kindOption = SpecOption(key: ObjectSpecError.Family.object.kindKey, value: kind)
        return try parse([kindOption] + options.map { SpecOption(key: $0.key, value: $0.value) })
    }

    private static func parse(_ options: [SpecOption]) throws(ObjectSpecError) -> ObjectSpec {
        let resolved = try ResolvedKind<ObjectKind>(options, family: .object)
        let checked = try CheckedOptions(resolved.options, schema: resolved.kind.schema, subject: resolved.subject)
        switch resolved.kind {
        case .mirror: return .mirror(try MirrorSpec(checked))
        case .redirector: return .redirector(try RedirectorSpec(checked))
        case .rewriter: return .rewriter(try RewriterSpec(checked))
        case .compare: return .compare(try CompareSpec(checked))
        case .conntrack: return .conntrack(try ConntrackSpec(checked))
        case .dump: return .dump(try DumpSpec(checked))
        }
    }

    public var kind: ObjectKind {
        switch self {
        case .mirror: .mirror
        case .redirector: .redirector
        case .rewriter: .rewriter
        case .compare: .compare
        case .conntrack: .conntrack
        case .dump: .dump
        }
    }

    public var id: String {
        switch self {
        case .mirror(let spec): spec.id
        case .redirector(let spec): spec.id
        case .rewriter(let spec): spec.id
        case .compare(let spec): spec.id
        case .conntrack(let spec): spec.id
        case .dump(let spec): spec.id
        }
    }

    /// The port and chain place of a netdev filter; nil for colo-compare, which hangs on no port.
    public var attachment: FilterAttachment? {
        switch self {
        case .mirror(let spec): spec.attachment
        case .redirector(let spec): spec.attachment
        case .rewriter(let spec): spec.attachment
        case .compare: nil
        case .conntrack(let spec): spec.attachment
        case .dump(let spec): spec.attachment
        }
    }

    /// The canonical text: kind, `id`, then the other keys in schema order, only those that differ from their
    /// defaults, commas in values doubled. It is what logs and `query-status` echo, and it parses back.
    public var specText: String {
        let values: [String: String]
        switch self {
        case .mirror(let spec): values = spec.specValues
        case .redirector(let spec): values = spec.specValues
        case .rewriter(let spec): values = spec.specValues
        case .compare(let spec): values = spec.specValues
        case .conntrack(let spec): values = spec.specValues
        case .dump(let spec): values = spec.specValues
        }
        return kind.schema.render(values)
    }

    public var description: String { specText }

    var subject: ObjectSpecError.Subject { ObjectSpecError.Subject(kind: kind.rawValue, id: id) }
}

/// The stage kinds `--object` accepts, by their QEMU names (`conntrack` is the proxy's own).
public enum ObjectKind: String, CaseIterable, Hashable, Sendable {
    case mirror = "filter-mirror"
    case redirector = "filter-redirector"
    case rewriter = "filter-rewriter"
    case compare = "colo-compare"
    case conntrack = "conntrack"
    case dump = "filter-dump"

    public var schema: ObjectSpecSchema {
        switch self {
        case .mirror: Self.mirrorSchema
        case .redirector: Self.redirectorSchema
        case .rewriter: Self.rewriterSchema
        case .compare: Self.compareSchema
        case .conntrack: Self.conntrackSchema
        case .dump: Self.dumpSchema
        }
    }

    private typealias Key = ObjectSpecSchema.Key

    /// Every netdev filter takes QEMU's netfilter keys; `specific` go between `netdev` and `queue`.
    private static func filterSchema(_ kind: ObjectKind, _ specific: [Key], vnetHeader: Bool) -> ObjectSpecSchema {
        var keys = [Key("id", .identifier, required: true), Key("netdev", .identifier, required: true)] + specific
        keys.append(Key("queue", .choice(QueueDirection.allCases.map(\.rawValue))))
        keys.append(Key("status", .choice(StageStatus.allCases.map(\.rawValue))))
        if vnetHeader { keys.append(Key("vnet_hdr_support", .boolean)) }
        keys.append(Key("position", .position))
        keys.append(Key("insert", .choice(FilterInsertion.allCases.map(\.rawValue))))
        return ObjectSpecSchema(kind: kind.rawValue, keys: keys)
    }

    private static let milliseconds = ObjectSpecSchema.ValueType.wholeNumber(
        1...UInt64.max, accepted: "a whole number of milliseconds > 0")

    private static let mirrorSchema = filterSchema(
        .mirror, [Key("outdev", .identifier, required: true)], vnetHeader: true)
    private static let redirectorSchema = filterSchema(
        .redirector, [Key("indev", .identifier), Key("outdev", .identifier)], vnetHeader: true)
    private static let rewriterSchema = filterSchema(.rewriter, [], vnetHeader: true)
    private static let conntrackSchema = filterSchema(
        .conntrack,
        [Key("zone", .wholeNumber(0...65535, accepted: "a zone number from 0 to 65535")), Key("commit", .boolean)],
        vnetHeader: false)
    private static let dumpSchema = filterSchema(
        .dump,
        [
            Key("file", .path(maxBytes: 4095, accepted: "a file path"), required: true),
            Key(
                "maxlen", .wholeNumber(1...UInt64(UInt32.max), accepted: "a whole number of bytes from 1 to 4294967295")
            ),
        ],
        vnetHeader: false)
    private static let compareSchema = ObjectSpecSchema(
        kind: ObjectKind.compare.rawValue,
        keys: [
            Key("id", .identifier, required: true),
            Key("primary_in", .identifier, required: true),
            Key("secondary_in", .identifier, required: true),
            Key("outdev", .identifier, required: true),
            Key("notify_dev", .identifier),
            Key("iothread", .identifier),
            Key("compare_timeout", milliseconds),
            Key("expired_scan_cycle", milliseconds),
            Key(
                "max_queue_size",
                .wholeNumber(1...UInt64(UInt32.max), accepted: "a whole number of packets from 1 to 4294967295")),
            Key("vnet_hdr_support", .boolean),
            Key("on_divergence", .choice(CompareSpec.divergenceChoices)),
        ])
}

extension ObjectSpecSchema {
    /// Renders `values` (keys of this schema) in schema order after the kind.
    func render(_ values: [String: String]) -> String {
        var options: [(key: String, value: String)] = []
        for key in keys {
            if let value = values[key.name] { options.append((key.name, value)) }
        }
        return SpecSyntax.render(kind: kind, options: options)
    }
}

/// The kind of a spec found among its options, and the options left once it is taken out.
struct ResolvedKind<Kind: RawRepresentable & CaseIterable> where Kind.RawValue == String {
    let kind: Kind
    let options: [SpecOption]
    /// The kind and, when `id` is given once and well-formed, the id: what every later error message starts with.
    let subject: ObjectSpecError.Subject

    init(_ options: [SpecOption], family: ObjectSpecError.Family) throws(ObjectSpecError) {
        let accepted = Kind.allCases.map(\.rawValue)
        let kindOptions = options.filter { $0.key == family.kindKey }
        guard let kindText = kindOptions.first?.value, !kindText.isEmpty else {
            throw .missingKind(family, accepted: accepted)
        }
        guard let kind = Kind(rawValue: kindText) else {
            let suggestion = SpellingSuggestion.nearest(kindText, in: accepted)
            throw .unknownKind(family, kind: kindText, accepted: accepted, suggestion: suggestion)
        }
        let rest = options.filter { $0.key != family.kindKey }
        let ids = rest.filter { $0.key == "id" }
        var id: String?
        if ids.count == 1, let given = ids[0].value, isIdentifier(given) { id = given }
        let subject = ObjectSpecError.Subject(kind: kindText, id: id)
        if kindOptions.count > 1 { throw .duplicateKey(subject, key: family.kindKey) }
        self.kind = kind
        self.options = rest
        self.subject = subject
    }
}
