import ColoConntrack
import ColoControl
import ColoMetrics
import ColoStages

/// What the control socket, the metrics server and `run` need of a running proxy, whichever data path it has
/// (`GraphProxy` for any graph, `TapProxy` for the standard chain on three TAPs). Everything but `perform`,
/// `stop` and `run` is called on the data thread.
public protocol RunningProxy: AnyObject, Sendable {
    var onDivergence: ((DivergenceEvent) -> Void)? { get set }
    var onFailover: (() -> Void)? { get set }
    /// The tracker every zone lives in.
    var conntrack: ConnectionTracker { get }
    func run()
    func stop()
    func perform<T: Sendable>(timeout: Double, _ work: @escaping @Sendable (Self) -> T) -> T?
    func checkpointDone()
    func failover()
    @discardableResult func drainOnShutdown() -> (released: Int, dropped: Int)
    func metricsSnapshot() -> MetricsSnapshot
    /// `query-status`'s object.
    func statusObject() -> JSONValue
    /// `query-stats`'s object.
    func statistics() -> JSONValue
    /// `query-connections`'s array.
    func connectionList() -> JSONValue
    /// `filter-set-status`: switches filter `id`, or says why not.
    func setFilterStatus(_ id: String, on: Bool) -> Result<JSONValue, QMPError>
}

extension RunningProxy {
    /// The QMP commands of SPEC §7, each run on the data thread.
    public func commandTable() -> QMPCommandTable {
        var table = QMPCommandTable()
        table.register(ColoQMPSchema.queryStatus) { [self] _ in answer { $0.statusObject() } }
        table.register(ColoQMPSchema.queryStats) { [self] _ in answer { $0.statistics() } }
        table.register(ColoQMPSchema.queryConnections) { [self] _ in answer { $0.connectionList() } }
        table.register(ColoQMPSchema.checkpointDone) { [self] _ in
            answer { proxy in
                proxy.checkpointDone()
                return .object([:])
            }
        }
        table.register(ColoQMPSchema.lostHeartbeat) { [self] _ in
            answer { proxy in
                proxy.failover()
                return .object([:])
            }
        }
        table.register(ColoQMPSchema.filterSetStatus) { [self] arguments in
            let id = arguments["id"]?.stringValue ?? ""
            let status = arguments["status"]?.stringValue ?? ""
            guard ColoQMPSchema.filterStatusValues.contains(status) else {
                return .failure(.generic("Parameter 'status' expects 'on' or 'off', not '\(status)'"))
            }
            guard let result = perform(timeout: 2, { $0.setFilterStatus(id, on: status == "on") }) else {
                return .failure(.generic("the data path did not answer in time"))
            }
            return result
        }
        return table
    }

    private func answer(_ work: @escaping @Sendable (Self) -> JSONValue) -> Result<JSONValue, QMPError> {
        guard let value = perform(timeout: 2, work) else {
            return .failure(.generic("the data path did not answer in time"))
        }
        return .success(value)
    }
}
