import ArgumentParser
import ColoControl
import ColoPorts
import ColoRuntime
import ColoStages
import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// `colo-proxy run`: the proxy on live ports. This version runs the standard chain on three TAP ports
/// (`--client/--primary/--secondary tap,...`); socket, NFQUEUE and pcap ports and `--object` chains come next.
public struct RunCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the proxy: mirror, rewrite and compare a primary/secondary pair live.",
        discussion: """
            With --client/--primary/--secondary the standard chain is built (SPEC §2): the client's traffic goes \
            to the primary and, rewritten, to the secondary; both replicas' output is compared and the primary's \
            released to the client. Ports are given in QEMU's syntax, e.g. tap,id=c,ifname=colo-c. SIGINT or \
            SIGTERM stop it after releasing the primary's held packets.
            """
    )

    @Option(name: .long, help: "The client-side port (tap,id=ID,ifname=NAME).")
    public var client: String

    @Option(name: .long, help: "The primary replica's port.")
    public var primary: String

    @Option(name: .long, help: "The secondary replica's port.")
    public var secondary: String

    @Option(name: .long, help: "QMP control socket path.")
    public var control: String = "/run/colo-proxy/control.sock"

    @Flag(name: .customLong("no-control"), help: "Do not open a control socket.")
    public var noControl = false

    @Option(
        name: .customLong("event-log"), help: "Append divergence events (JSON lines) here; default standard output.")
    public var eventLog: String?

    @Option(name: .customLong("compare-timeout"), help: "compare_timeout in milliseconds (QEMU's default 3000).")
    public var compareTimeout: UInt64 = 3000

    @Option(name: .customLong("on-divergence"), help: "checkpoint or release (default release).")
    public var onDivergence: String = "release"

    public init() {}

    public func validate() throws {
        guard compareTimeout > 0 else {
            throw ValidationError("--compare-timeout: bad value 0 (accepted: a whole number of milliseconds > 0)")
        }
        guard onDivergence == "checkpoint" || onDivergence == "release" else {
            throw ValidationError("--on-divergence: bad value '\(onDivergence)' (accepted: checkpoint, release)")
        }
    }

    static func tapSpec(_ text: String, role: String) throws -> TapPortSpec {
        let spec: PortSpec
        do { spec = try PortSpec.parse(text) } catch { throw ValidationError("--\(role): \(error)") }
        guard case .tap(let tap) = spec else {
            throw ValidationError("--\(role): port kind '\(spec.kind)' is not supported by run yet (accepted: tap)")
        }
        return tap
    }

    public func run() throws {
        // Before any thread exists, so every thread inherits the mask and only the waiter sees the signals.
        SignalStopper.block()
        let logger = Logger(label: "colo-proxy")
        let specs = try [("client", client), ("primary", primary), ("secondary", secondary)].map {
            try Self.tapSpec($0.1, role: $0.0)
        }
        var devices: [TapDevice] = []
        for spec in specs {
            do {
                devices.append(try TapDevice(name: spec.interfaceName, mode: .tap, vnetHeader: spec.vnetHeader))
            } catch {
                StandardError.line("colo-proxy run: \(error)")
                throw ExitCode(2)
            }
        }
        var configuration = TapProxy.Configuration()
        configuration.compare.compareTimeout = compareTimeout * 1_000_000
        configuration.compare.onDivergence = onDivergence == "checkpoint" ? .checkpoint : .release
        let proxy: TapProxy
        do {
            proxy = try TapProxy(
                client: devices[0], primary: devices[1], secondary: devices[2], configuration: configuration)
        } catch {
            StandardError.line("colo-proxy run: \(error)")
            throw ExitCode(2)
        }

        let log = try EventLog(path: eventLog)
        var server: QMPServer?
        if !noControl {
            do {
                server = try QMPServer(path: control, handler: proxy.commandTable())
            } catch {
                StandardError.line("colo-proxy run: control socket \(control): \(error)")
                throw ExitCode(2)
            }
        }
        proxy.onDivergence = { [server] event in
            log.write(event.json)
            if let data = try? JSONValue.parse(event.json).objectValue {
                server?.broadcast(event: ColoQMPSchema.divergenceEvent, data: data)
            }
        }
        proxy.onFailover = { [server] in server?.broadcast(event: ColoQMPSchema.failoverEvent, data: [:]) }

        SignalStopper.wait { proxy.stop() }
        let controlText = noControl ? "" : ", control \(control)"
        logger.info(
            "running: client \(devices[0].name), primary \(devices[1].name), secondary \(devices[2].name)\(controlText)"
        )
        proxy.run()
        let (released, dropped) = proxy.drainOnShutdown()
        server?.stop()
        logger.info(
            "stopped: released \(released) held primary packets to the client, dropped \(dropped) secondary ones")
    }
}

/// Divergence events as JSON lines, to a file (appended) or standard output.
final class EventLog: @unchecked Sendable {
    private let fd: Int32

    init(path: String?) throws {
        guard let path else {
            fd = 1
            return
        }
        let opened = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard opened >= 0 else {
            throw ValidationError("--event-log: cannot open \(path): \(String(cString: strerror(errno)))")
        }
        fd = opened
    }

    func write(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }
}

/// Turns SIGINT and SIGTERM into a call on a helper thread (not in signal context): the signals are blocked
/// everywhere and collected with sigwait.
enum SignalStopper {
    static var signals: sigset_t {
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        return signals
    }

    static func block() {
        var set = signals
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    static func wait(_ action: @escaping @Sendable () -> Void) {
        let waitSet = signals
        let thread = Thread {
            var received: Int32 = 0
            var set = waitSet
            _ = sigwait(&set, &received)
            action()
        }
        thread.start()
    }
}
