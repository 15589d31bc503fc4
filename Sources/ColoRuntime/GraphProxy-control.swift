import ColoConntrack
import ColoControl
import ColoPacket
import ColoStages

/// The control socket's commands (SPEC §7) for a `GraphProxy`; each runs on the data thread through `perform`.
extension GraphProxy: RunningProxy {
    public var conntrack: ConnectionTracker { tracker }

    public func statusObject() -> JSONValue {
        .object([
            "status": "running", "failed-over": .bool(comparers.contains { $0.failedOver }),
            "connections": .integer(Int64(tracker.count)),
            "compared-connections": .integer(Int64(comparers.reduce(0) { $0 + $1.connectionCount })),
            "filters": .array(filterIDs.map { .string($0) }),
        ])
    }

    public func setFilterStatus(_ id: String, on: Bool) -> Result<JSONValue, QMPError> {
        guard setStatus(id, on: on) else {
            let known = filterIDs.joined(separator: ", ")
            return .failure(QMPError(.deviceNotFound, "Filter '\(id)' not found (filters: \(known))"))
        }
        return .success(.object([:]))
    }

    public func statistics() -> JSONValue {
        var portObjects = JSONObject()
        for port in ports {
            let counters = port.portCounters
            portObjects[port.id] = .object([
                "in": .integer(Int64(counters.framesIn)), "out": .integer(Int64(counters.framesOut)),
                "bytes-in": .integer(Int64(counters.bytesIn)), "bytes-out": .integer(Int64(counters.bytesOut)),
                "send-refused": .integer(Int64(counters.sendRefused)),
                "store-full": .integer(Int64(counters.storeFull)), "errors": .integer(Int64(counters.errors)),
                "connects": .integer(Int64(counters.connects)),
                "disconnects": .integer(Int64(counters.disconnects)),
            ])
        }
        var compareObjects = JSONObject()
        for (index, comparer) in comparers.enumerated() {
            let compare = comparer.counters
            var reasons = JSONObject()
            for reason in DivergenceReason.allCases {
                reasons[reason.rawValue] = .integer(Int64(compare.divergencesByReason[reason] ?? 0))
            }
            compareObjects[graph.compares[index].spec.id] = .object([
                "released": .integer(Int64(compare.released)), "dropped": .integer(Int64(compare.dropped)),
                "bytes-compared": .integer(Int64(compare.bytesCompared)),
                "datagrams-matched": .integer(Int64(compare.datagramsMatched)),
                "divergences": .integer(Int64(compare.divergences)), "by-reason": .object(reasons),
                "checkpoints": .integer(Int64(compare.checkpoints)),
                "queued": .object([
                    "primary": .integer(Int64(comparer.queuedPackets.primary)),
                    "secondary": .integer(Int64(comparer.queuedPackets.secondary)),
                ]),
                "malformed": .integer(Int64(compare.malformed)),
            ])
        }
        let conntrack = tracker.counters
        return .object([
            "ports": .object(portObjects),
            "compare": .object(compareObjects),
            "graph": .object([
                "unrouted": .integer(Int64(counters.unrouted)),
                "mirror-refused": .integer(Int64(counters.mirrorRefused)),
                "send-refused": .integer(Int64(counters.sendRefused)),
                "dump-errors": .integer(Int64(counters.dumpErrors)),
                "passed": .integer(Int64(counters.passed)), "loops": .integer(Int64(counters.loops)),
                "link-mismatch": .integer(Int64(counters.linkMismatch)),
                "paused-turns": .integer(Int64(pausedTurns)),
                "lead-deferred-turns": .integer(Int64(leadDeferredTurns)),
            ]),
            "conntrack": .object([
                "entries": .integer(Int64(tracker.count)), "created": .integer(Int64(conntrack.created)),
                "invalid": .integer(Int64(conntrack.invalid)),
                "refused": .integer(Int64(conntrack.refusedGlobalLimit + conntrack.refusedZoneLimit)),
            ]),
        ])
    }

    /// The conntrack table, one object per connection, with the rewriter's offset on the secondary's entries.
    public func connectionList() -> JSONValue {
        var list: [JSONValue] = []
        let now = monotonicNanoseconds()
        tracker.forEachEntry { handle, entry in
            let key = entry.key
            var item: JSONObject = [
                "zone": .integer(Int64(key.zone)),
                "proto": .string(IPProtocol.name(key.protocolNumber)),
                "src": .string(key.sourceAddress.description), "sport": .integer(Int64(key.sourcePort)),
                "dst": .string(key.destinationAddress.description), "dport": .integer(Int64(key.destinationPort)),
                "conntrack": .string(ConntrackFormatter.line(entry, now: now)),
            ]
            if key.zone == ObjectGraph.secondaryZone,
                let offset = rewriters.lazy.compactMap({ $0.offset(of: handle) })
                    .first
            {
                item["offset"] = .integer(Int64(Int32(bitPattern: offset)))
            }
            list.append(.object(item))
        }
        return .array(list)
    }
}
