import ColoMetrics
import ColoStages
import Foundation
import TOMLKit

/// Everything `colo-proxy run` needs, from a TOML config file (SPEC §6), the command line, or both merged.
///
/// Scalars are optional so that a merge can tell "not given" from "given": read them through the `resolved…`
/// accessors, which apply the defaults.
public struct RunConfiguration: Equatable, Sendable {
    /// `--client/--primary/--secondary`: the standard chain on three ports.
    public struct Shortcut: Equatable, Sendable {
        public var client: PortSpec
        public var primary: PortSpec
        public var secondary: PortSpec

        public init(client: PortSpec, primary: PortSpec, secondary: PortSpec) {
            self.client = client
            self.primary = primary
            self.secondary = secondary
        }

        public var ports: [PortSpec] { [client, primary, secondary] }
    }

    public static let defaultControlPath = "/run/colo-proxy/control.sock"
    public static let defaultCompareTimeoutMilliseconds: UInt64 = 3000
    public static let onDivergenceChoices = ["checkpoint", "release"]

    /// `--port`, in order.
    public var ports: [PortSpec] = []
    /// `--object`, in order: the chain order.
    public var objects: [ObjectSpec] = []
    public var shortcut: Shortcut?
    /// `--control PATH`.
    public var control: String?
    /// false: `--no-control`.
    public var controlEnabled: Bool?
    /// `--metrics HOST:PORT` (checked with ``MetricsServer/parseAddress(_:)``).
    public var metrics: String?
    /// `--event-log FILE`; nil = standard output.
    public var eventLog: String?
    public var divergencePcap: String?
    public var conntrackEvents: Bool?
    /// `--compare-timeout` in milliseconds, for the standard chain.
    public var compareTimeout: UInt64?
    /// `--on-divergence checkpoint|release`, for the standard chain.
    public var onDivergence: String?

    public init() {}

    public var resolvedControl: String? {
        controlEnabled == false ? nil : (control ?? Self.defaultControlPath)
    }
    public var resolvedCompareTimeout: UInt64 { compareTimeout ?? Self.defaultCompareTimeoutMilliseconds }
    public var resolvedOnDivergence: String { onDivergence ?? "release" }
    public var resolvedConntrackEvents: Bool { conntrackEvents ?? false }

    /// Every port: the shortcut's three, then `ports`.
    public var allPorts: [PortSpec] { (shortcut?.ports ?? []) + ports }

    /// This configuration (a config file's) with `overrides` (the command line's) on top: every scalar the
    /// command line gives wins; the command line's shortcut replaces the file's; a command-line port or object
    /// with the id of one in the file replaces it in place, others are appended (so the file's chain order holds).
    public func merged(with overrides: RunConfiguration) -> RunConfiguration {
        var result = self
        result.ports = Self.merge(ports, overrides.ports, id: \.id)
        result.objects = Self.merge(objects, overrides.objects, id: \.id)
        if let shortcut = overrides.shortcut { result.shortcut = shortcut }
        if let value = overrides.control { result.control = value }
        if let value = overrides.controlEnabled { result.controlEnabled = value }
        if let value = overrides.metrics { result.metrics = value }
        if let value = overrides.eventLog { result.eventLog = value }
        if let value = overrides.divergencePcap { result.divergencePcap = value }
        if let value = overrides.conntrackEvents { result.conntrackEvents = value }
        if let value = overrides.compareTimeout { result.compareTimeout = value }
        if let value = overrides.onDivergence { result.onDivergence = value }
        return result
    }

    private static func merge<T>(_ base: [T], _ top: [T], id: (T) -> String) -> [T] {
        var result = base
        for item in top {
            if let index = result.firstIndex(where: { id($0) == id(item) }) {
                result[index] = item
            } else {
                result.append(item)
            }
        }
        return result
    }

    /// Checks the whole set (ids unique across ports and objects, references resolve); returns the internal
    /// channels. The shortcut's ports count as ports.
    @discardableResult
    public func validate() throws(ObjectSpecError) -> [InternalChannel] {
        try ObjectSpec.validate(objects: objects, ports: allPorts)
    }
}

/// A config file problem: one line naming the file, the key and what is accepted.
public struct ConfigFileError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    /// `port[2].vnet_hdr`, `compare_timeout`; empty for problems of the file as a whole.
    public var key: String
    public var message: String

    public init(file: String, key: String, message: String) {
        self.file = file
        self.key = key
        self.message = message
    }

    public var description: String { key.isEmpty ? "\(file): \(message)" : "\(file): \(key): \(message)" }
}

extension RunConfiguration {
    /// The top-level keys a config file takes (tables and arrays of tables included).
    public static let configKeys = [
        "control", "no_control", "metrics", "event_log", "divergence_pcap", "conntrack_events", "compare_timeout",
        "on_divergence", "client", "primary", "secondary", "port", "object",
    ]

    /// Reads and parses the TOML file at `path`.
    public static func load(path: String) throws(ConfigFileError) -> RunConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            let reason = (error as NSError).localizedFailureReason ?? "cannot read it"
            throw ConfigFileError(file: path, key: "", message: "cannot read the config file: \(reason)")
        }
        return try parse(text, file: path)
    }

    /// Parses TOML text; `file` names it in errors.
    public static func parse(_ text: String, file: String) throws(ConfigFileError) -> RunConfiguration {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            let position = error.source.begin
            throw ConfigFileError(
                file: "\(file):\(position.line):\(position.column)", key: "",
                message: "not valid TOML: \(error.description)")
        } catch {
            throw ConfigFileError(file: file, key: "", message: "not valid TOML: \(error)")
        }
        var reader = ConfigReader(file: file)
        return try reader.read(table)
    }
}

/// Walks a parsed file, key by key.
private struct ConfigReader {
    let file: String

    func fail(_ key: String, _ message: String) -> ConfigFileError {
        ConfigFileError(file: file, key: key, message: message)
    }

    mutating func read(_ table: TOMLTable) throws(ConfigFileError) -> RunConfiguration {
        var configuration = RunConfiguration()
        for key in table.keys.sorted() where !RunConfiguration.configKeys.contains(key) {
            throw fail(key, "unknown key (accepted: \(RunConfiguration.configKeys.joined(separator: ", ")))")
        }
        configuration.control = try string(table, "control", accepted: "a Unix socket path")
        if let path = configuration.control, path.isEmpty || path.utf8.count > 107 {
            throw fail("control", "bad value '\(path)' (accepted: a Unix socket path of 1 to 107 bytes)")
        }
        if let noControl = try bool(table, "no_control") { configuration.controlEnabled = !noControl }
        if let metrics = try string(table, "metrics", accepted: "HOST:PORT") {
            do {
                _ = try MetricsServer.parseAddress(metrics)
            } catch {
                throw fail("metrics", "\(error)")
            }
            configuration.metrics = metrics
        }
        configuration.eventLog = try path(table, "event_log")
        configuration.divergencePcap = try path(table, "divergence_pcap")
        configuration.conntrackEvents = try bool(table, "conntrack_events")
        if let value = table["compare_timeout"] {
            guard let number = value.int, number > 0 else {
                throw fail(
                    "compare_timeout", "bad value \(render(value)) (accepted: a whole number of milliseconds > 0)")
            }
            configuration.compareTimeout = UInt64(number)
        }
        if let choice = try string(table, "on_divergence", accepted: "checkpoint, release") {
            guard RunConfiguration.onDivergenceChoices.contains(choice) else {
                throw fail("on_divergence", "bad value '\(choice)' (accepted: checkpoint, release)")
            }
            configuration.onDivergence = choice
        }

        let roles = ["client", "primary", "secondary"]
        let given = roles.filter { table[$0] != nil }
        if !given.isEmpty {
            guard given.count == 3 else {
                let missing = roles.filter { !given.contains($0) }
                throw fail(
                    missing[0],
                    "missing: [client], [primary] and [secondary] go together (given: \(given.joined(separator: ", ")))"
                )
            }
            var specs: [PortSpec] = []
            for role in roles {
                guard let value = table[role], let portTable = value.table else {
                    throw fail(role, "must be a table ([\(role)] with kind = \"tap\", ...)")
                }
                specs.append(try port(portTable, key: role, defaultID: role))
            }
            configuration.shortcut = RunConfiguration.Shortcut(client: specs[0], primary: specs[1], secondary: specs[2])
        }
        for (index, portTable) in try tables(table, "port").enumerated() {
            configuration.ports.append(try port(portTable, key: "port[\(index)]", defaultID: nil))
        }
        for (index, objectTable) in try tables(table, "object").enumerated() {
            configuration.objects.append(try object(objectTable, key: "object[\(index)]"))
        }
        do {
            try configuration.validate()
        } catch {
            throw fail("", "\(error)")
        }
        return configuration
    }

    private func string(_ table: TOMLTable, _ key: String, accepted: String) throws(ConfigFileError) -> String? {
        guard let value = table[key] else { return nil }
        guard let text = value.string else {
            throw fail(key, "bad value \(render(value)) (accepted: \(accepted), as a string)")
        }
        return text
    }

    private func path(_ table: TOMLTable, _ key: String) throws(ConfigFileError) -> String? {
        guard let text = try string(table, key, accepted: "a file path") else { return nil }
        guard !text.isEmpty, !text.utf8.contains(0) else {
            throw fail(key, "bad value '\(text)' (accepted: a file path)")
        }
        return text
    }

    private func bool(_ table: TOMLTable, _ key: String) throws(ConfigFileError) -> Bool? {
        guard let value = table[key] else { return nil }
        guard let flag = value.bool else { throw fail(key, "bad value \(render(value)) (accepted: true, false)") }
        return flag
    }

    private func tables(_ table: TOMLTable, _ key: String) throws(ConfigFileError) -> [TOMLTable] {
        guard let value = table[key] else { return [] }
        guard let array = value.array else {
            throw fail(key, "must be an array of tables ([[\(key)]] with kind = ..., id = ...)")
        }
        var result: [TOMLTable] = []
        for (index, element) in array.enumerated() {
            guard let elementTable = element.table else {
                throw fail("\(key)[\(index)]", "must be a table ([[\(key)]] with kind = ..., id = ...)")
            }
            result.append(elementTable)
        }
        return result
    }

    /// The table's keys as spec options (values as command-line text), `kind` taken out.
    private func options(_ table: TOMLTable, key: String, accepted kinds: [String], defaultID: String?)
        throws(ConfigFileError) -> (kind: String, options: [(key: String, value: String)])
    {
        guard let kindValue = table["kind"] else {
            throw fail("\(key).kind", "missing (accepted: \(kinds.joined(separator: ", ")))")
        }
        guard let kind = kindValue.string else {
            throw fail("\(key).kind", "bad value \(render(kindValue)) (accepted: \(kinds.joined(separator: ", ")))")
        }
        var options: [(key: String, value: String)] = []
        if let defaultID, table["id"] == nil { options.append(("id", defaultID)) }
        for name in table.keys.sorted() where name != "kind" {
            guard let value = table[name] else { continue }
            let text: String
            switch value.type {
            case .string: text = value.string ?? ""
            case .int: text = String(value.int ?? 0)
            case .bool: text = value.bool == true ? "on" : "off"
            case .double: text = String(value.double ?? 0)
            default:
                throw fail("\(key).\(name)", "bad value \(render(value)) (accepted: a string, number or boolean)")
            }
            options.append((name, text))
        }
        return (kind, options)
    }

    private func port(_ table: TOMLTable, key: String, defaultID: String?) throws(ConfigFileError) -> PortSpec {
        let (kind, options) = try options(
            table, key: key, accepted: PortKind.allCases.map(\.rawValue), defaultID: defaultID)
        do {
            return try PortSpec.parse(kind: kind, options: options)
        } catch {
            throw fail(keyPath(key, error), "\(error)")
        }
    }

    private func object(_ table: TOMLTable, key: String) throws(ConfigFileError) -> ObjectSpec {
        let (kind, options) = try options(
            table, key: key, accepted: ObjectKind.allCases.map(\.rawValue), defaultID: nil)
        do {
            return try ObjectSpec.parse(kind: kind, options: options)
        } catch {
            throw fail(keyPath(key, error), "\(error)")
        }
    }

    /// `port[2].vnet_hdr` when the spec error is about one key.
    private func keyPath(_ table: String, _ error: ObjectSpecError) -> String {
        switch error {
        case .duplicateKey(_, let key), .unknownKey(_, let key, _, _), .missingValue(_, let key, _),
            .emptyValue(_, let key, _), .missingKey(_, let key), .badValue(_, let key, _, _),
            .badReference(_, let key, _, _):
            return "\(table).\(key)"
        case .missingKind, .unknownKind:
            return "\(table).kind"
        default:
            return table
        }
    }

    private func render(_ value: any TOMLValueConvertible) -> String {
        switch value.type {
        case .string: return "'\(value.string ?? "")'"
        case .table: return "(a table)"
        case .array: return "(an array)"
        default: return value.debugDescription
        }
    }
}

extension RunConfiguration {
    /// The spec-valued flags of `run` (`--port`, `--object`, `--client/--primary/--secondary`) as a configuration to
    /// merge over a file's; each error names the flag and is one line. Scalars are left for the caller to set.
    public static func fromFlags(
        ports: [String], objects: [String], client: String?, primary: String?, secondary: String?
    ) throws(FlagError) -> RunConfiguration {
        var configuration = RunConfiguration()
        for text in ports {
            do {
                configuration.ports.append(try PortSpec.parse(text))
            } catch {
                throw FlagError(flag: "--port", message: "\(error)")
            }
        }
        for text in objects {
            do {
                configuration.objects.append(try ObjectSpec.parse(text))
            } catch {
                throw FlagError(flag: "--object", message: "\(error)")
            }
        }
        let roles = [("--client", client), ("--primary", primary), ("--secondary", secondary)]
        let given = roles.filter { $0.1 != nil }
        if !given.isEmpty {
            guard given.count == 3 else {
                let missing = roles.filter { $0.1 == nil }.map(\.0)
                throw FlagError(
                    flag: missing[0], message: "missing: --client, --primary and --secondary go together")
            }
            var specs: [PortSpec] = []
            for (flag, text) in roles {
                do {
                    specs.append(try PortSpec.parse(text ?? ""))
                } catch {
                    throw FlagError(flag: flag, message: "\(error)")
                }
            }
            configuration.shortcut = Shortcut(client: specs[0], primary: specs[1], secondary: specs[2])
        }
        return configuration
    }
}

/// A bad command-line flag value: `--object: filter-mirror m0: unknown key 'x' (accepted: ...)`.
public struct FlagError: Error, Equatable, Sendable, CustomStringConvertible {
    public var flag: String
    public var message: String

    public init(flag: String, message: String) {
        self.flag = flag
        self.message = message
    }

    public var description: String { "\(flag): \(message)" }
}
