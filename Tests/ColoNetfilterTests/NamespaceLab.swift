import ColoNetfilter
import ColoTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

// Test-side lab helpers (LAB.md): namespaces with pid-suffixed names removed in every path, commands run with
// posix_spawn and a hard timeout, and a dedicated thread that enters a namespace before opening a queue.

/// Fails the current test (never skips) when not root: the namespace, iptables and NFQUEUE calls need it.
func requireRoot() -> Bool {
    requireRoot("NFQUEUE, iptables and network namespaces need CAP_NET_ADMIN")
}

// MARK: Namespaces

/// Two network namespaces `nfq-a-<pid>-<tag>` (10.50.0.1/24) and `nfq-b-<pid>-<tag>` (10.50.0.2/24) joined by a veth
/// pair named `nfq0` on both sides. ``destroy()`` removes the rules it added and both namespaces (and so the veth).
final class NamespacePair {
    static let addressA = "10.50.0.1"
    static let addressB = "10.50.0.2"

    let nameA: String
    let nameB: String
    private var rules: [[String]] = []
    private var destroyed = false

    init(tag: String) throws {
        let pid = getpid()
        nameA = "nfq-a-\(pid)-\(tag)"
        nameB = "nfq-b-\(pid)-\(tag)"
        do {
            try Command.mustRun(["ip", "netns", "add", nameA])
            try Command.mustRun(["ip", "netns", "add", nameB])
            try Command.mustRun([
                "ip", "-n", nameA, "link", "add", "nfq0", "type", "veth", "peer", "name", "nfq0", "netns", nameB,
            ])
            for (namespace, address) in [(nameA, Self.addressA), (nameB, Self.addressB)] {
                try Command.mustRun(["ip", "-n", namespace, "addr", "add", "\(address)/24", "dev", "nfq0"])
                try Command.mustRun(["ip", "-n", namespace, "link", "set", "nfq0", "up"])
                try Command.mustRun(["ip", "-n", namespace, "link", "set", "lo", "up"])
            }
        } catch {
            destroy()
            throw error
        }
    }

    deinit { destroy() }

    /// Appends an iptables rule in namespace b (e.g. `["INPUT", "-p", "icmp", "-j", "NFQUEUE", ...]`).
    func addRuleInB(_ rule: [String]) throws {
        try Command.mustRun(["ip", "netns", "exec", nameB, "iptables", "-A"] + rule)
        rules.append(rule)
    }

    /// Runs `arguments` inside namespace a.
    func runInA(_ arguments: [String], timeout: Double) throws -> CommandResult {
        try Command.run(["ip", "netns", "exec", nameA] + arguments, timeout: timeout)
    }

    /// Runs `arguments` inside namespace b.
    func runInB(_ arguments: [String], timeout: Double) throws -> CommandResult {
        try Command.run(["ip", "netns", "exec", nameB] + arguments, timeout: timeout)
    }

    /// The interface index of `nfq0` in namespace b.
    func interfaceIndexInB() throws -> UInt32 {
        let result = try runInB(["cat", "/sys/class/net/nfq0/ifindex"], timeout: 2)
        guard result.succeeded, let index = UInt32(result.output.filter(\.isNumber)) else {
            throw LabError(description: "cannot read the ifindex of nfq0 in \(nameB): \(result)")
        }
        return index
    }

    /// A counter from namespace b's /proc/net/snmp, e.g. ("Icmp", "InCsumErrors").
    func snmpCounterInB(_ group: String, _ name: String) throws -> Int {
        let result = try runInB(["cat", "/proc/net/snmp"], timeout: 2)
        let lines = result.output.split(separator: "\n").filter { $0.hasPrefix("\(group): ") }
        guard lines.count == 2 else { throw LabError(description: "no \(group) lines in /proc/net/snmp: \(result)") }
        let names = lines[0].split(separator: " ")
        let values = lines[1].split(separator: " ")
        guard let column = names.firstIndex(where: { $0 == name }), column < values.count,
            let value = Int(values[column])
        else { throw LabError(description: "no \(group) \(name) in /proc/net/snmp") }
        return value
    }

    /// Removes the added rules and both namespaces; idempotent, best effort (never throws).
    func destroy() {
        guard !destroyed else { return }
        destroyed = true
        for rule in rules.reversed() {
            _ = try? Command.run(["ip", "netns", "exec", nameB, "iptables", "-D"] + rule, timeout: 5)
        }
        for namespace in [nameA, nameB] {
            _ = try? Command.run(["ip", "netns", "del", namespace], timeout: 5)
        }
    }

    /// Whether either namespace still exists (for asserting cleanup).
    var anyNamespaceExists: Bool {
        access("/run/netns/\(nameA)", F_OK) == 0 || access("/run/netns/\(nameB)", F_OK) == 0
    }
}

// MARK: A thread inside a namespace

/// `setns(2)`, which Glibc's Swift module does not export: looked up once in the C library.
private let setNamespace: (@convention(c) (Int32, Int32) -> Int32)? = {
    guard let symbol = dlsym(nil, "setns") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int32) -> Int32).self)
}()

private let cloneNewNet: Int32 = 0x4000_0000

/// A joinable pthread running one closure (non-generic, so the C start routine can name it).
private final class JoinablePthread: @unchecked Sendable {
    private let work: @Sendable () -> Void
    private var thread: pthread_t?

    init(_ work: @escaping @Sendable () -> Void) {
        self.work = work
    }

    func start() throws {
        var created = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let result = pthread_create(
            &created, nil,
            { context in
                guard let context else { return nil }
                Unmanaged<JoinablePthread>.fromOpaque(context).takeRetainedValue().work()
                return nil
            }, context)
        if result != 0 {
            Unmanaged<JoinablePthread>.fromOpaque(context).release()
            throw LabError(description: "pthread_create: \(String(cString: strerror(result)))")
        }
        thread = created
    }

    func join() {
        guard let thread else { return }
        pthread_join(thread, nil)
        self.thread = nil
    }
}

/// A fresh pthread that joins the network namespace `/run/netns/<namespace>` (setns affects only the calling
/// thread) and then runs `body`; the thread ends with the body, so nothing else ever runs in that namespace on it.
final class NamespaceThread<Output: Sendable>: @unchecked Sendable {
    // Written by the thread before it exits, read after pthread_join (which orders the accesses).
    private var outcome: Result<Output, any Error> = .failure(LabError(description: "thread did not run"))
    private var pthread: JoinablePthread?

    private init() {}

    /// Starts the thread; ``join()`` must follow.
    static func start(
        namespace: String,
        _ body: @escaping @Sendable () throws -> Output
    ) throws -> NamespaceThread<Output> {
        let thread = NamespaceThread<Output>()
        let pthread = JoinablePthread {
            thread.outcome = Result { try enterNamespace(namespace) }.flatMap { Result { try body() } }
        }
        try pthread.start()
        thread.pthread = pthread
        return thread
    }

    /// Waits for the thread (its body must be bounded in time) and returns what the body returned or threw.
    func join() throws -> Output {
        pthread?.join()
        pthread = nil
        return try outcome.get()
    }
}

/// Moves the calling thread into the network namespace `/run/netns/<namespace>`.
private func enterNamespace(_ namespace: String) throws {
    guard let setNamespace else { throw LabError(description: "setns not found in the C library") }
    let descriptor = open("/run/netns/\(namespace)", O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else {
        throw LabError(description: "open /run/netns/\(namespace): \(String(cString: strerror(errno)))")
    }
    defer { close(descriptor) }
    guard setNamespace(descriptor, cloneNewNet) == 0 else {
        throw LabError(description: "setns(\(namespace)): \(String(cString: strerror(errno)))")
    }
}

/// Start/stop signalling between a test and its queue thread.
final class QueueThreadControl: Sendable {
    private let state = Atomic<Int>(0)  // 0 starting, 1 queue open, 2 failed before opening
    private let stopRequested = Atomic<Bool>(false)

    func markReady() { state.store(1, ordering: .releasing) }
    func markFailed() { state.store(2, ordering: .releasing) }
    func requestStop() { stopRequested.store(true, ordering: .releasing) }
    var shouldStop: Bool { stopRequested.load(ordering: .acquiring) }

    /// Waits (at most `timeout` seconds) until the thread opened its queue; false if it failed or timed out.
    func waitUntilReady(timeout: Double = 5) -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .milliseconds(Int(timeout * 1000)))
        while clock.now < deadline {
            switch state.load(ordering: .acquiring) {
            case 1: return true
            case 2: return false
            default: usleep(2_000)
            }
        }
        return false
    }
}

extension NetfilterQueue {
    /// Polls and receives until `control` asks to stop or `limit` seconds pass, handing every packet to `body`.
    func serve(
        until control: QueueThreadControl,
        limit: Double = 10,
        _ body: (QueuedPacket) -> Void
    ) throws(NetfilterQueueError) {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .milliseconds(Int(limit * 1000)))
        while !control.shouldStop && clock.now < deadline {
            var descriptor = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
            if poll(&descriptor, 1, 20) > 0 {
                try receive(maxPackets: 64, body)
            }
        }
        try receive(maxPackets: 64, body)  // whatever arrived while stopping
    }
}

/// The number in ping's "N received" summary, or nil if there is no summary.
func pingReplies(_ result: CommandResult) -> Int? {
    guard let line = result.output.split(separator: "\n").first(where: { $0.contains("packets transmitted") }) else {
        return nil
    }
    for part in line.split(separator: ",") where part.contains("received") {
        return Int(part.filter(\.isNumber))
    }
    return nil
}

/// A queue number for this test process: 100 + pid % 100, plus `offset` so tests never share one.
func queueNumber(offset: UInt16) -> UInt16 {
    100 + UInt16(getpid() % 100) + offset * 100
}
