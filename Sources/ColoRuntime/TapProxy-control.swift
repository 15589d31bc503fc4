import ColoConntrack
import ColoControl
import ColoPacket
import ColoStages

/// The control socket's commands (SPEC §7) for a `TapProxy`. Each runs on the data thread through `perform`.
extension TapProxy: RunningProxy {
    /// Stage ids of the standard chain, for `filter-set-status`.
    public static let rewriterID = "rew0"
    public static let compareID = "comp0"
    public static let conntrackID = "ct0"

    public var conntrack: ConnectionTracker { pipeline.tracker }

    public func statusObject() -> JSONValue {
        .object([
            "status": "running", "failed-over": .bool(pipeline.comparer.failedOver),
            "connections": .integer(Int64(pipeline.tracker.count)),
            "compared-connections": .integer(Int64(pipeline.comparer.connectionCount)),
        ])
    }

    public func setFilterStatus(_ id: String, on: Bool) -> Result<JSONValue, QMPError> {
        switch id {
        case Self.rewriterID:
            pipeline.rewriterEnabled = on
            return .success(.object([:]))
        case Self.compareID, Self.conntrackID:
            return .failure(.generic("Filter '\(id)' cannot be switched \(on ? "on" : "off") in the standard chain"))
        default:
            return .failure(QMPError(.deviceNotFound, "Filter '\(id)' not found (the chain has \(Self.rewriterID))"))
        }
    }

    public func statistics() -> JSONValue {
        let compare = pipeline.comparer.counters
        let conntrack = pipeline.tracker.counters
        var reasons = JSONObject()
        for reason in DivergenceReason.allCases {
            reasons[reason.rawValue] = .integer(Int64(compare.divergencesByReason[reason] ?? 0))
        }
        return .object([
            "ports": .object([
                "client": .object([
                    "in": .integer(Int64(counters.framesIn.client)), "out": .integer(Int64(counters.framesOut.client)),
                ]),
                "primary": .object([
                    "in": .integer(Int64(counters.framesIn.primary)),
                    "out": .integer(Int64(counters.framesOut.primary)),
                ]),
                "secondary": .object([
                    "in": .integer(Int64(counters.framesIn.secondary)),
                    "out": .integer(Int64(counters.framesOut.secondary)),
                ]),
                "write-refused": .integer(Int64(counters.writeRefused)),
                "store-full": .integer(Int64(counters.storeFull)),
                "offload-refused": .integer(Int64(counters.offloadRefused)),
                "large-frames-in": .integer(Int64(counters.largeFramesIn)),
            ]),
            "compare": .object([
                "released": .integer(Int64(compare.released)), "dropped": .integer(Int64(compare.dropped)),
                "bytes-compared": .integer(Int64(compare.bytesCompared)),
                "datagrams-matched": .integer(Int64(compare.datagramsMatched)),
                "divergences": .integer(Int64(compare.divergences)), "by-reason": .object(reasons),
                "checkpoints": .integer(Int64(compare.checkpoints)),
                "queued": .object([
                    "primary": .integer(Int64(pipeline.comparer.queuedPackets.primary)),
                    "secondary": .integer(Int64(pipeline.comparer.queuedPackets.secondary)),
                ]),
                // Client acks ahead of a lagging secondary: lowered to what it sent; the latest kept for later.
                "secondary-ack-pacing": .object([
                    "kept-now": .integer(Int64(pipeline.heldForSecondary)),
                    "clamped": .integer(Int64(pipeline.holdCounters.clamped)),
                    "delivered": .integer(Int64(pipeline.holdCounters.delivered)),
                    "dropped": .integer(Int64(pipeline.holdCounters.dropped)),
                    "refused": .integer(Int64(pipeline.holdCounters.refused)),
                ]),
            ]),
            "conntrack": .object([
                "entries": .integer(Int64(pipeline.tracker.count)), "created": .integer(Int64(conntrack.created)),
                "invalid": .integer(Int64(conntrack.invalid)),
                "refused": .integer(Int64(conntrack.refusedGlobalLimit + conntrack.refusedZoneLimit)),
            ]),
            "rewriter": .object([
                "offsets-learned": .integer(Int64(pipeline.rewriter.counters.learned)),
                "rewritten-to-secondary": .integer(Int64(pipeline.rewriter.counters.rewrittenTowardSecondary)),
                "rewritten-from-secondary": .integer(Int64(pipeline.rewriter.counters.rewrittenFromSecondary)),
            ]),
        ])
    }

    /// The conntrack table, one object per connection, with the rewriter's offset on the secondary's entries.
    public func connectionList() -> JSONValue {
        var list: [JSONValue] = []
        let now = Self.monotonicNow()
        pipeline.tracker.forEachEntry { handle, entry in
            let key = entry.key
            var item: JSONObject = [
                "zone": .integer(Int64(key.zone)),
                "replica": .string(key.zone == ColoPipeline.primaryZone ? "primary" : "secondary"),
                "proto": .string(IPProtocol.name(key.protocolNumber)),
                "src": .string(key.sourceAddress.description), "sport": .integer(Int64(key.sourcePort)),
                "dst": .string(key.destinationAddress.description), "dport": .integer(Int64(key.destinationPort)),
                "conntrack": .string(ConntrackFormatter.line(entry, now: now)),
            ]
            if key.zone == ColoPipeline.secondaryZone, let offset = pipeline.rewriter.offset(of: handle) {
                item["offset"] = .integer(Int64(Int32(bitPattern: offset)))
            }
            list.append(.object(item))
        }
        return .array(list)
    }
}
