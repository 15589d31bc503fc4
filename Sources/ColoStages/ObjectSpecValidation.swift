/// A name that no port has, written by stages' `outdev`s and read by exactly one stage: packets pass between the
/// stages inside the process, where QEMU would need a pair of connected chardevs.
public struct InternalChannel: Hashable, Sendable {
    /// One stage's key that names the channel.
    public struct End: Hashable, Sendable {
        public let objectID: String
        public let key: String

        public init(objectID: String, key: String) {
            self.objectID = objectID
            self.key = key
        }
    }

    public let name: String
    /// `outdev` of filter-mirror, filter-redirector or colo-compare, in declaration order.
    public let writers: [End]
    /// `indev` of a filter-redirector, or `primary_in`/`secondary_in` of a colo-compare.
    public let reader: End

    public init(name: String, writers: [End], reader: End) {
        self.name = name
        self.writers = writers
        self.reader = reader
    }
}

extension ObjectSpec {
    /// Checks a whole set of objects and ports and returns the internal channels it forms.
    ///
    /// The rules:
    /// - every spec meets the same per-key rules as a parsed one (specs built in code are re-checked through
    ///   their `specText`);
    /// - ids are unique across ports and objects together;
    /// - `netdev` names a port (any kind); `notify_dev` names a socket port;
    /// - an `outdev` (mirror, redirector, compare) names a port, or else makes an internal channel of that name;
    /// - a reading end (redirector `indev`, compare `primary_in`/`secondary_in`) names a port or such a channel;
    /// - every channel is read by exactly one reading end, so a typo on either side is an error, not a dead end;
    /// - no reference names an object, and `position=id=ID` names another filter on the same netdev;
    /// - an object with `vnet_hdr_support=on` reads and writes only socket ports with `vnet_hdr_support=on`.
    @discardableResult
    public static func validate(objects: [ObjectSpec], ports: [PortSpec]) throws(ObjectSpecError)
        -> [InternalChannel]
    {
        for port in ports { _ = try PortSpec.parse(port.specText) }
        for object in objects { _ = try ObjectSpec.parse(object.specText) }

        var owners: [String: ObjectSpecError.Subject] = [:]
        for subject in ports.map(\.subject) + objects.map(\.subject) {
            let id = subject.id ?? ""
            if let first = owners[id] { throw .duplicateID(id, first: first, second: subject) }
            owners[id] = subject
        }
        let portIDs = ports.map(\.id)
        let portsByID = Dictionary(ports.map { ($0.id, $0) }) { first, _ in first }
        let objectsByID = Dictionary(objects.map { ($0.id, $0) }) { first, _ in first }

        var channelNames: [String] = []
        var writers: [String: [(object: ObjectSpec, key: String)]] = [:]
        for object in objects {
            for reference in object.references where reference.role == .writer {
                let name = reference.name
                guard portsByID[name] == nil, objectsByID[name] == nil else { continue }
                if writers[name] == nil { channelNames.append(name) }
                writers[name, default: []].append((object, reference.key))
            }
        }

        var readers: [String: (object: ObjectSpec, key: String)] = [:]
        for object in objects {
            for reference in object.references {
                let (key, name) = (reference.key, reference.name)
                if let port = portsByID[name] {
                    if reference.role == .socketPort, port.kind != .socket {
                        throw .badReference(
                            object.subject, key: key, name: name, problem: .notASocketPort(kind: port.kind.rawValue))
                    }
                    if reference.role == .reader || reference.role == .writer, object.vnetHeaderSupport,
                        case .socket(let socket) = port, !socket.vnetHeaderSupport
                    {
                        throw .badReference(object.subject, key: key, name: name, problem: .socketPortWithoutVnetHeader)
                    }
                    continue
                }
                if let other = objectsByID[name] {
                    throw .badReference(object.subject, key: key, name: name, problem: .namesObject(other.subject))
                }
                switch reference.role {
                case .port, .socketPort:
                    throw .badReference(object.subject, key: key, name: name, problem: .notAPort(ports: portIDs))
                case .writer:
                    continue
                case .reader:
                    guard writers[name] != nil else {
                        throw .badReference(
                            object.subject, key: key, name: name,
                            problem: .notAPortOrChannel(ports: portIDs, channels: channelNames))
                    }
                    if let earlier = readers[name] {
                        throw .badReference(
                            object.subject, key: key, name: name,
                            problem: .channelAlreadyRead(by: earlier.object.subject, key: earlier.key))
                    }
                    readers[name] = (object, key)
                }
            }
        }

        var channels: [InternalChannel] = []
        for name in channelNames {
            let channelWriters = writers[name] ?? []
            guard let reader = readers[name] else {
                if let writer = channelWriters.first {
                    throw .badReference(
                        writer.object.subject, key: writer.key, name: name,
                        problem: .channelWithoutReader(ports: portIDs))
                }
                continue
            }
            channels.append(
                InternalChannel(
                    name: name,
                    writers: channelWriters.map { InternalChannel.End(objectID: $0.object.id, key: $0.key) },
                    reader: InternalChannel.End(objectID: reader.object.id, key: reader.key)))
        }

        for object in objects {
            guard let ours = object.attachment, case .filter(let target) = ours.position else { continue }
            guard target != object.id else {
                throw .badReference(object.subject, key: "position", name: target, problem: .positionIsSelf)
            }
            guard let theirs = objectsByID[target]?.attachment else {
                throw .badReference(
                    object.subject, key: "position", name: target, problem: .positionNotAFilter(netdev: ours.netdev))
            }
            guard theirs.netdev == ours.netdev else {
                throw .badReference(
                    object.subject, key: "position", name: target,
                    problem: .positionOnOtherNetdev(theirs: theirs.netdev, ours: ours.netdev))
            }
        }
        return channels
    }

    /// How a key's name is resolved in `validate`.
    enum ReferenceRole {
        /// Must be a port.
        case port
        /// Must be a socket port.
        case socketPort
        /// Packets go there: a port, or else an internal channel.
        case writer
        /// Packets come from there: a port or an internal channel some writer makes.
        case reader
    }

    /// The names this object refers to, in schema order.
    /// QEMU's `vnet_hdr_support` on a filter or colo-compare: its chardevs carry the V field.
    var vnetHeaderSupport: Bool {
        switch self {
        case .mirror(let spec): spec.vnetHeaderSupport
        case .redirector(let spec): spec.vnetHeaderSupport
        case .compare(let spec): spec.vnetHeaderSupport
        case .rewriter, .conntrack, .dump: false
        }
    }

    var references: [(key: String, name: String, role: ReferenceRole)] {
        switch self {
        case .mirror(let spec):
            return [("netdev", spec.attachment.netdev, .port), ("outdev", spec.outdev, .writer)]
        case .redirector(let spec):
            var references: [(key: String, name: String, role: ReferenceRole)] = [
                ("netdev", spec.attachment.netdev, .port)
            ]
            if let indev = spec.indev { references.append(("indev", indev, .reader)) }
            if let outdev = spec.outdev { references.append(("outdev", outdev, .writer)) }
            return references
        case .rewriter(let spec):
            return [("netdev", spec.attachment.netdev, .port)]
        case .compare(let spec):
            var references: [(key: String, name: String, role: ReferenceRole)] = [
                ("primary_in", spec.primaryIn, .reader), ("secondary_in", spec.secondaryIn, .reader),
                ("outdev", spec.outdev, .writer),
            ]
            if let notifyDev = spec.notifyDev { references.append(("notify_dev", notifyDev, .socketPort)) }
            return references
        case .conntrack(let spec):
            return [("netdev", spec.attachment.netdev, .port)]
        case .dump(let spec):
            return [("netdev", spec.attachment.netdev, .port)]
        }
    }
}
