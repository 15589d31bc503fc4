/// Why an `--object` or `--port` spec, or a set of them, was refused; `description` is one line that names the kind,
/// the id when known, the key and the accepted values (SPEC §8).
public enum ObjectSpecError: Error, CustomStringConvertible, Hashable, Sendable {
    /// Which option a spec came from; it names the kind list and the key that may carry the kind.
    public enum Family: String, Hashable, Sendable {
        /// `--object`; the kind is the first element or `qom-type=KIND`.
        case object
        /// `--port`; the kind is the first element or `type=KIND`, as for QEMU's `-netdev`.
        case port

        /// The key QEMU implies for a first element without `=`.
        var kindKey: String { self == .object ? "qom-type" : "type" }
    }

    /// The spec an error is about: its kind, and its id once one was found well-formed.
    public struct Subject: Hashable, Sendable, CustomStringConvertible {
        public var kind: String
        public var id: String?

        public init(kind: String, id: String?) {
            self.kind = kind
            self.id = id
        }

        public var description: String { id.map { "\(kind) \($0)" } ?? kind }
    }

    /// What is wrong with a name that one spec uses to refer to a port, a channel or another object.
    public enum ReferenceProblem: Hashable, Sendable {
        /// Only a port may be named here (`netdev`, `notify_dev`); `ports` are the declared port ids.
        case notAPort(ports: [String])
        /// A reading end (`indev`, `primary_in`, `secondary_in`) names neither a port nor a channel some stage's
        /// `outdev` writes.
        case notAPortOrChannel(ports: [String], channels: [String])
        /// An `outdev` names no port, so it makes a channel, but no stage reads that channel.
        case channelWithoutReader(ports: [String])
        /// A channel hands each packet to one reader; this is the second.
        case channelAlreadyRead(by: Subject, key: String)
        /// The name is another object's id; objects are not packet endpoints.
        case namesObject(Subject)
        /// `notify_dev` speaks the controller's framed text protocol, which only a socket port carries.
        case notASocketPort(kind: String)
        /// `position=id=ID` names no filter (colo-compare is none); `netdev` is this filter's.
        case positionNotAFilter(netdev: String)
        case positionIsSelf
        /// `position=id=ID` names a filter on another netdev; QEMU orders filters per netdev.
        case positionOnOtherNetdev(theirs: String, ours: String)
        /// The object says `vnet_hdr_support=on` (QEMU's way, on the filter), but the socket port it names frames
        /// without the V field; here the framing belongs to the port, and the two would read each other's bytes
        /// wrongly.
        case socketPortWithoutVnetHeader
    }

    case emptySpec(Family)
    case missingKind(Family, accepted: [String])
    case unknownKind(Family, kind: String, accepted: [String], suggestion: String?)
    /// An element with nothing before its `=`, or an empty element (`element` is then empty).
    case missingKeyName(Subject, element: String)
    case duplicateKey(Subject, key: String)
    case unknownKey(Subject, key: String, accepted: [String], suggestion: String?)
    /// A bare `key` (no `=`) for a key that is not a boolean.
    case missingValue(Subject, key: String, accepted: String)
    case emptyValue(Subject, key: String, accepted: String)
    case missingKey(Subject, key: String)
    case badValue(Subject, key: String, value: String, accepted: String)
    /// Keys that are each fine but not together (or a choice of keys none of which was given).
    case conflictingKeys(Subject, detail: String)
    /// Ids are unique across all objects and ports, since references do not say which of the two they mean.
    case duplicateID(String, first: Subject, second: Subject)
    case badReference(Subject, key: String, name: String, problem: ReferenceProblem)

    public var description: String {
        switch self {
        case .emptySpec(let family):
            return "empty \(family.rawValue) spec (expected KIND,id=ID,key=value,...)"
        case .missingKind(let family, let accepted):
            return "missing \(family.rawValue) kind: start with KIND or give \(family.kindKey)=KIND"
                + " (accepted: \(list(accepted)))"
        case .unknownKind(let family, let kind, let accepted, let suggestion):
            return "unknown \(family.rawValue) kind '\(kind)' (accepted: \(list(accepted)))" + didYouMean(suggestion)
        case .missingKeyName(let subject, let element):
            return element.isEmpty
                ? "\(subject): empty option (a stray ',')" : "\(subject): option '\(element)' has no key"
        case .duplicateKey(let subject, let key):
            return "\(subject): duplicate key '\(key)'"
        case .unknownKey(let subject, let key, let accepted, let suggestion):
            return "\(subject): unknown key '\(key)' (accepted: \(list(accepted)))" + didYouMean(suggestion)
        case .missingValue(let subject, let key, let accepted):
            return "\(subject): key '\(key)' needs a value (accepted: \(accepted))"
        case .emptyValue(let subject, let key, let accepted):
            return "\(subject): empty value for '\(key)' (accepted: \(accepted))"
        case .missingKey(let subject, let key):
            return "\(subject): missing required key '\(key)'"
        case .badValue(let subject, let key, let value, let accepted):
            return "\(subject): bad value '\(value)' for '\(key)' (accepted: \(accepted))"
        case .conflictingKeys(let subject, let detail):
            return "\(subject): \(detail)"
        case .duplicateID(let id, let first, let second):
            return "duplicate id '\(id)': used by \(first.kind) and by \(second.kind)"
        case .badReference(let subject, let key, let name, let problem):
            return "\(subject): " + Self.describe(problem, key: key, name: name)
        }
    }

    private static func describe(_ problem: ReferenceProblem, key: String, name: String) -> String {
        switch problem {
        case .notAPort(let ports):
            return "unknown port '\(name)' for '\(key)' (declared ports: \(list(ports)))"
        case .notAPortOrChannel(let ports, let channels):
            return "unknown port or channel '\(name)' for '\(key)'"
                + " (declared ports: \(list(ports)); channels written by an outdev: \(list(channels)))"
        case .channelWithoutReader(let ports):
            return "'\(name)' for '\(key)' is no declared port, and no indev, primary_in or secondary_in reads it"
                + " as a channel (declared ports: \(list(ports)))"
        case .channelAlreadyRead(let reader, let readerKey):
            return "channel '\(name)' for '\(key)' is already read by \(reader) '\(readerKey)'"
        case .namesObject(let object):
            return "'\(name)' for '\(key)' names \(object), not a port"
        case .notASocketPort(let kind):
            return "'\(name)' for '\(key)' names a \(kind) port (accepted: a socket port)"
        case .positionNotAFilter(let netdev):
            return "'id=\(name)' for '\(key)' names no filter (accepted: head, tail, id=ID of a filter on \(netdev))"
        case .positionIsSelf:
            return "'id=\(name)' for '\(key)' names this filter itself (accepted: head, tail, id=ID of another filter)"
        case .positionOnOtherNetdev(let theirs, let ours):
            return "'id=\(name)' for '\(key)' names a filter on netdev \(theirs), not \(ours)"
        case .socketPortWithoutVnetHeader:
            return "vnet_hdr_support=on, but socket port '\(name)' (its '\(key)') frames without the V field;"
                + " the framing is set on the port: add vnet_hdr_support=on to socket port \(name)"
        }
    }
}

private func list(_ names: [String]) -> String {
    names.isEmpty ? "none" : names.joined(separator: ", ")
}

private func didYouMean(_ suggestion: String?) -> String {
    suggestion.map { "; did you mean '\($0)'?" } ?? ""
}
