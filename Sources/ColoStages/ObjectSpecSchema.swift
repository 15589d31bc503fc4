/// The keys one kind of `--object` or `--port` accepts: each key's value type and whether it must be given.
///
/// Parsing checks a spec against its schema first (unknown, duplicate, missing, empty and ill-typed keys), so the
/// typed specs are built only from values already known good; defaults live in the typed specs.
public struct ObjectSpecSchema: Sendable {
    /// One key: its name as written, its value type, and whether a spec must give it.
    public struct Key: Sendable {
        public let name: String
        public let type: ValueType
        public let isRequired: Bool

        init(_ name: String, _ type: ValueType, required: Bool = false) {
            self.name = name
            self.type = type
            self.isRequired = required
        }
    }

    /// What values a key takes. `accepted` is the phrase error messages show.
    public enum ValueType: Hashable, Sendable {
        /// QEMU's well-formed id: a letter, then letters, digits, `-`, `.`, `_`. Also used for references.
        case identifier
        /// `on`/`off`; also `yes`/`no`, `true`/`false`, `y`/`n` as QEMU takes them, and a bare `key` for `on`.
        case boolean
        /// Exactly one of these words.
        case choice([String])
        /// QEMU's filter `position=`: `head`, `tail` or `id=ID`.
        case position
        /// Decimal digits only (no sign, no hex), within `range`; `accepted` says what the number means.
        case wholeNumber(ClosedRange<UInt64>, accepted: String)
        /// A file system path of at most `maxBytes` bytes of UTF-8, without NUL.
        case path(maxBytes: Int, accepted: String)
        /// A host name or IP address literal (IPv6 without brackets, as QEMU's `host=` takes it).
        case host
        /// A Linux network interface name (at most 15 bytes; no `/`, `:` or white space; not `.` or `..`).
        case interfaceName

        public var accepted: String {
            switch self {
            case .identifier: "an id: a letter, then letters, digits, '-', '.' or '_'"
            case .boolean: "on, off"
            case .choice(let words): words.joined(separator: ", ")
            case .position: "head, tail, id=ID"
            case .wholeNumber(_, let accepted), .path(_, let accepted): accepted
            case .host: "a host name or IP address"
            case .interfaceName: "an interface name of 1 to 15 bytes without '/', ':' or spaces"
            }
        }

        /// The value in normal form (booleans become `on`/`off`), or nil when this type does not take it.
        func normalize(_ value: String) -> String? {
            switch self {
            case .identifier:
                return isIdentifier(value) ? value : nil
            case .boolean:
                switch value {
                case "on", "yes", "true", "y": return "on"
                case "off", "no", "false", "n": return "off"
                default: return nil
                }
            case .choice(let words):
                return words.contains(value) ? value : nil
            case .position:
                return FilterPosition(specValue: value) == nil ? nil : value
            case .wholeNumber(let range, _):
                guard let number = parseWholeNumber(value), range.contains(number) else { return nil }
                return String(number)
            case .path(let maxBytes, _):
                return value.utf8.count <= maxBytes && !value.utf8.contains(0) ? value : nil
            case .host:
                let allowed = value.utf8.allSatisfy { byte in
                    isAlphanumeric(byte) || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
                        || byte == UInt8(ascii: ":") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "%")
                }
                return allowed && value.utf8.count <= 255 ? value : nil
            case .interfaceName:
                let bytes = value.utf8
                let forbidden: Set<UInt8> = [UInt8(ascii: "/"), UInt8(ascii: ":"), 0]
                let valid =
                    bytes.count <= 15 && value != "." && value != ".."
                    && bytes.allSatisfy { $0 > 0x20 && $0 != 0x7F && !forbidden.contains($0) }
                return valid ? value : nil
            }
        }
    }

    public let kind: String
    /// In the order error messages list them; `id` first.
    public let keys: [Key]

    public var keyNames: [String] { keys.map(\.name) }

    func key(named name: String) -> Key? {
        keys.first { $0.name == name }
    }
}

/// QEMU's rule for ids (`id_wellformed`): a letter, then letters, digits, `-`, `.`, `_`.
func isIdentifier(_ text: String) -> Bool {
    guard let first = text.utf8.first, isLetter(first) else { return false }
    return text.utf8.allSatisfy {
        isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_")
    }
}

private func isLetter(_ byte: UInt8) -> Bool {
    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20)
}

private func isAlphanumeric(_ byte: UInt8) -> Bool {
    isLetter(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
}

/// Decimal digits only: `UInt64("+5")` would take the sign, and QEMU users should not meet surprises like that.
private func parseWholeNumber(_ text: String) -> UInt64? {
    guard !text.isEmpty, text.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
        return nil
    }
    return UInt64(text)
}

/// A spec's options after its schema checked them: every key known and given once, each value of its type.
struct CheckedOptions {
    let subject: ObjectSpecError.Subject
    private let values: [String: String]

    /// Checks in the order a reader fixes them: stray elements, duplicates, unknown keys, then each key of the
    /// schema in schema order (missing, bare, empty, ill-typed).
    init(_ options: [SpecOption], schema: ObjectSpecSchema, subject: ObjectSpecError.Subject) throws(ObjectSpecError) {
        self.subject = subject
        var seen: Set<String> = []
        for option in options {
            if option.key.isEmpty {
                throw .missingKeyName(subject, element: option.value.map { "=" + $0 } ?? "")
            }
            if !seen.insert(option.key).inserted {
                throw .duplicateKey(subject, key: option.key)
            }
        }
        for option in options where schema.key(named: option.key) == nil {
            let suggestion = SpellingSuggestion.nearest(option.key, in: schema.keyNames)
            throw .unknownKey(subject, key: option.key, accepted: schema.keyNames, suggestion: suggestion)
        }
        var values: [String: String] = [:]
        for key in schema.keys {
            guard let option = options.first(where: { $0.key == key.name }) else {
                if key.isRequired { throw .missingKey(subject, key: key.name) }
                continue
            }
            guard let raw = option.value else {
                guard key.type == .boolean else {
                    throw .missingValue(subject, key: key.name, accepted: key.type.accepted)
                }
                values[key.name] = "on"
                continue
            }
            guard !raw.isEmpty else { throw .emptyValue(subject, key: key.name, accepted: key.type.accepted) }
            guard let normal = key.type.normalize(raw) else {
                throw .badValue(subject, key: key.name, value: raw, accepted: key.type.accepted)
            }
            values[key.name] = normal
        }
        self.values = values
    }

    func text(_ key: String) -> String? {
        values[key]
    }

    /// A key the schema marks required; the schema check has seen it, so the throw is a safety net only.
    func required(_ key: String) throws(ObjectSpecError) -> String {
        guard let value = values[key] else { throw .missingKey(subject, key: key) }
        return value
    }

    func flag(_ key: String) -> Bool? {
        values[key].map { $0 == "on" }
    }

    func number<Number: FixedWidthInteger>(_ key: String, as _: Number.Type) throws(ObjectSpecError) -> Number? {
        try converted(key) { text in UInt64(text).flatMap { Number(exactly: $0) } }
    }

    func choice<Choice: RawRepresentable>(_ key: String, as _: Choice.Type) throws(ObjectSpecError) -> Choice?
    where Choice.RawValue == String {
        try converted(key) { Choice(rawValue: $0) }
    }

    /// The key's value made typed; a value the schema let through but the type refuses is a bad value, not a crash.
    func converted<Value>(_ key: String, _ convert: (String) -> Value?) throws(ObjectSpecError) -> Value? {
        guard let text = values[key] else { return nil }
        guard let value = convert(text) else {
            throw .badValue(subject, key: key, value: text, accepted: "a value of this key's type")
        }
        return value
    }
}
