import ColoStages

/// The `--port`/`--object` specs compiled into what the data thread walks: one chain of stages per port and
/// direction, one input chain per colo-compare side, and where each chain ends (SPEC §2).
///
/// The model, QEMU's netdev filters made explicit:
/// - a frame a port hands to the proxy (its `tx`) walks the port's tx chain in command-line order; at the end it
///   goes to whatever reads from that port (a colo-compare's `primary_in`/`secondary_in`, a redirector's `indev`);
///   if nothing does, it is counted as unrouted and dropped;
/// - a frame sent to a port (an `outdev`) walks the port's rx chain, in reverse command-line order as QEMU walks
///   receive filters, and is then written to the port;
/// - `filter-mirror` sends a copy to its `outdev` and lets the original go on; `filter-redirector` sends the
///   frame to its `outdev` instead of onward, and frames read from its `indev` continue the chain behind it;
/// - `filter-rewriter` is the secondary's: rx (toward it) `ack += offset` and then tracks in the secondary's zone,
///   tx (from it) tracks and then `seq -= offset`; it learns the primary's ISN from any colo-compare in the process;
/// - `colo-compare` tracks each side in its own zone (1 primary, 2 secondary) unless a stage already did.
struct ObjectGraph {
    enum Target: Equatable {
        /// Through the port's rx chain, then written to it.
        case port(Int)
        /// Into a colo-compare input chain.
        case compare(Int, primary: Bool)
        /// Continues chain `chain` at `position` (a redirector's `indev`).
        case inject(chain: Int, position: Int)
    }

    enum Stage {
        case mirror(Target)
        /// nil: a redirector with only an `indev`; frames pass on.
        case redirect(Target?)
        case rewriteToward(rewriter: Int)
        case rewriteFrom(rewriter: Int)
        case track(zone: UInt16)
        case dump(writer: Int)
    }

    struct Slot {
        var stage: Stage
        /// The object whose `status=` switches this slot (several slots for one object: `queue=all`, rewriter).
        var objectID: String
    }

    enum End: Equatable {
        case deliver(Target)
        case send(port: Int)
        case unrouted(port: Int)
        case compare(Int, primary: Bool)
    }

    struct Chain {
        var slots: [Slot] = []
        var end: End
    }

    struct CompareNode {
        var spec: CompareSpec
        var outdev: Target
    }

    var portIDs: [String]
    /// Chain `2p` is port p's tx chain, `2p + 1` its rx chain; then two per compare (primary, secondary).
    var chains: [Chain]
    var compares: [CompareNode]
    var rewriterIDs: [String]
    var dumps: [DumpSpec]
    /// Every filter object's initial status, by id.
    var initialStatus: [String: Bool]

    static let primaryZone: UInt16 = 1
    static let secondaryZone: UInt16 = 2

    static func txChain(_ port: Int) -> Int { 2 * port }
    static func rxChain(_ port: Int) -> Int { 2 * port + 1 }
    func compareChain(_ compare: Int, primary: Bool) -> Int { 2 * portIDs.count + 2 * compare + (primary ? 0 : 1) }

    /// Validates (`ObjectSpec.validate`) and compiles.
    init(ports: [PortSpec], objects: [ObjectSpec]) throws(ObjectSpecError) {
        try ObjectSpec.validate(objects: objects, ports: ports)
        portIDs = ports.map(\.id)
        let portIndex = Dictionary(uniqueKeysWithValues: portIDs.enumerated().map { ($1, $0) })
        chains = portIDs.indices.flatMap { [Chain(end: .unrouted(port: $0)), Chain(end: .send(port: $0))] }
        compares = []
        rewriterIDs = []
        dumps = []
        initialStatus = [:]

        var compareIndex: [String: Int] = [:]
        for object in objects {
            if case .compare(let spec) = object {
                compareIndex[spec.id] = compares.count
                compares.append(CompareNode(spec: spec, outdev: .port(0)))
                chains.append(Chain(slots: [], end: .compare(compares.count - 1, primary: true)))
                chains.append(Chain(slots: [], end: .compare(compares.count - 1, primary: false)))
            }
        }
        for (index, node) in compares.enumerated() {
            chains[compareChain(index, primary: true)].slots = [
                Slot(stage: .track(zone: Self.primaryZone), objectID: node.spec.id)
            ]
            chains[compareChain(index, primary: false)].slots = [
                Slot(stage: .track(zone: Self.secondaryZone), objectID: node.spec.id)
            ]
        }

        // Chains in order, honouring position=head/tail/id=ID and insert=before/behind.
        var ordered: [Int: [(slots: [Slot], id: String)]] = [:]
        var rewriterIndex: [String: Int] = [:]
        var dumpIndex: [String: Int] = [:]
        for object in objects {
            guard let attachment = object.attachment, let port = portIndex[attachment.netdev] else { continue }
            initialStatus[object.id] = attachment.status == .on
            var directions: [Bool] = []  // true = rx
            switch attachment.queue {
            case .rx: directions = [true]
            case .tx: directions = [false]
            case .all: directions = [false, true]
            }
            for rx in directions {
                let chain = rx ? Self.rxChain(port) : Self.txChain(port)
                var slots: [Slot] = []
                switch object {
                case .mirror, .redirector:
                    // Targets are resolved below, once every chain exists.
                    slots = [Slot(stage: .redirect(nil), objectID: object.id)]
                case .rewriter(let spec):
                    let index = rewriterIndex[spec.id] ?? rewriterIDs.count
                    if index == rewriterIDs.count {
                        rewriterIDs.append(spec.id)
                        rewriterIndex[spec.id] = index
                    }
                    slots =
                        rx
                        ? [
                            Slot(stage: .rewriteToward(rewriter: index), objectID: spec.id),
                            Slot(stage: .track(zone: Self.secondaryZone), objectID: spec.id),
                        ]
                        : [
                            Slot(stage: .track(zone: Self.secondaryZone), objectID: spec.id),
                            Slot(stage: .rewriteFrom(rewriter: index), objectID: spec.id),
                        ]
                case .conntrack(let spec):
                    slots = [Slot(stage: .track(zone: spec.zone), objectID: spec.id)]
                case .dump(let spec):
                    let index = dumpIndex[spec.id] ?? dumps.count
                    if index == dumps.count {
                        dumps.append(spec)
                        dumpIndex[spec.id] = index
                    }
                    slots = [Slot(stage: .dump(writer: index), objectID: spec.id)]
                case .compare:
                    continue
                }
                var list = ordered[chain, default: []]
                switch attachment.position {
                case .tail: list.append((slots, object.id))
                case .head: list.insert((slots, object.id), at: 0)
                case .filter(let other):
                    let at = list.firstIndex { $0.id == other } ?? list.count
                    list.insert((slots, object.id), at: attachment.insert == .before ? at : min(at + 1, list.count))
                }
                ordered[chain] = list
            }
        }
        for (chain, list) in ordered {
            // QEMU walks receive filters from the last to the first.
            let inOrder = chain % 2 == 1 ? Array(list.reversed()) : list
            chains[chain].slots = inOrder.flatMap(\.slots)
        }

        // What reads each name: a compare input or a redirector's indev (a position in a chain).
        var readers: [String: Target] = [:]
        for (index, node) in compares.enumerated() {
            readers[node.spec.primaryIn] = .compare(index, primary: true)
            readers[node.spec.secondaryIn] = .compare(index, primary: false)
        }
        for object in objects {
            guard case .redirector(let spec) = object, let indev = spec.indev,
                let port = portIndex[spec.attachment.netdev]
            else { continue }
            // Frames from indev go the way the filter faces: toward the port (rx) unless it only sees tx.
            let chain = spec.attachment.queue == .tx ? Self.txChain(port) : Self.rxChain(port)
            let position = chains[chain].slots.lastIndex { $0.objectID == spec.id }.map { $0 + 1 } ?? 0
            readers[indev] = .inject(chain: chain, position: position)
        }
        func target(_ name: String) -> Target {
            if let port = portIndex[name] { return .port(port) }
            // validate() guarantees every channel has a reader.
            return readers[name] ?? .port(0)
        }
        // A port that something reads from ends its tx chain there.
        for (name, reader) in readers {
            guard let port = portIndex[name] else { continue }
            chains[Self.txChain(port)].end = .deliver(reader)
        }
        for index in compares.indices { compares[index].outdev = target(compares[index].spec.outdev) }
        let objectsByID = Dictionary(objects.map { ($0.id, $0) }) { first, _ in first }
        for chain in chains.indices {
            for slot in chains[chain].slots.indices {
                guard case .redirect = chains[chain].slots[slot].stage,
                    let object = objectsByID[chains[chain].slots[slot].objectID]
                else { continue }
                switch object {
                case .mirror(let spec): chains[chain].slots[slot].stage = .mirror(target(spec.outdev))
                case .redirector(let spec): chains[chain].slots[slot].stage = .redirect(spec.outdev.map(target))
                default: break
                }
            }
        }
    }
}
