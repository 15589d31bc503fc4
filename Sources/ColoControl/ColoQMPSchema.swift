/// The commands and events colo-proxy's control socket offers (SPEC §7), as schemas for a ``QMPCommandTable``.
/// What each command returns is the proxy's business; the names and arguments are fixed here so the CLI client,
/// the proxy and the tests agree.
public enum ColoQMPSchema {
    /// `query-status`: the proxy's state (running, failed over, ...).
    public static let queryStatus = QMPCommand("query-status")
    /// `query-connections`: the conntrack table with rewrite offsets and queue depths.
    public static let queryConnections = QMPCommand("query-connections")
    /// `query-stats`: packet, compare and divergence counters.
    public static let queryStats = QMPCommand("query-stats")
    /// `colo-checkpoint-done`: the checkpoint controller finished a checkpoint; queued packets are released.
    public static let checkpointDone = QMPCommand("colo-checkpoint-done")
    /// `x-colo-lost-heartbeat`: the primary is gone; fail over to the secondary.
    public static let lostHeartbeat = QMPCommand("x-colo-lost-heartbeat")
    /// `filter-set-status`: switch the stage `id` `on` or `off` at run time.
    public static let filterSetStatus = QMPCommand(
        "filter-set-status",
        arguments: [QMPArgument("id", .string), QMPArgument("status", .string)]
    )

    /// The values `filter-set-status` accepts for `status`.
    public static let filterStatusValues = ["on", "off"]

    /// All of the above, in the order `query-commands` lists them.
    public static let commands = [
        queryStatus, queryConnections, queryStats, checkpointDone, lostHeartbeat, filterSetStatus,
    ]

    /// Event sent when the compared outputs diverge (data: the divergence, as in the event log).
    public static let divergenceEvent = "DIVERGENCE"
    /// Event sent when the proxy fails over to the secondary.
    public static let failoverEvent = "FAILOVER"
}
