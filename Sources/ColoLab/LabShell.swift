#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A failure in the lab plumbing (spawning, namespaces), with what was attempted.
public struct LabFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What a finished (or killed) lab command left behind.
public struct LabResult: CustomStringConvertible, Sendable {
    /// The exit code, or 128 + signal when killed (also after a timeout).
    public var status: Int32
    public var timedOut: Bool
    /// stdout and stderr, interleaved (first MiB).
    public var output: String
    public var succeeded: Bool { status == 0 && !timedOut }
    public var description: String { "status \(status)\(timedOut ? " (timed out)" : ""): \(output)" }
}

/// Runs lab commands with posix_spawn: an empty signal mask and default dispositions (callers' threads may block
/// signals, and children would inherit that), output into a temporary file; after `timeout` seconds SIGTERM,
/// then SIGKILL 10 seconds later.
public enum LabShell {
    private static let searchPath = ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"]

    public static func locate(_ name: String) -> String {
        if name.hasPrefix("/") { return name }
        for directory in searchPath where access("\(directory)/\(name)", X_OK) == 0 {
            return "\(directory)/\(name)"
        }
        return name
    }

    @discardableResult
    public static func run(_ arguments: [String], timeout: Double = 5) throws -> LabResult {
        guard let program = arguments.first else { throw LabFailure("empty command") }
        var template = Array("/tmp/colo-lab-out-XXXXXX".utf8CString)
        let outputDescriptor = template.withUnsafeMutableBufferPointer { buffer -> Int32 in
            guard let base = buffer.baseAddress else { return -1 }
            return mkstemp(base)
        }
        guard outputDescriptor >= 0 else { throw LabFailure("mkstemp: \(String(cString: strerror(errno)))") }
        let outputPath = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer {
            close(outputDescriptor)
            unlink(outputPath)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outputDescriptor, 1)
        posix_spawn_file_actions_adddup2(&actions, outputDescriptor, 2)
        let pid = try spawn([locate(program)] + arguments.dropFirst(), actions: &actions)

        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .milliseconds(Int(timeout * 1000)))
        var waitStatus: Int32 = 0
        var timedOut = false
        while true {
            let waited = waitpid(pid, &waitStatus, WNOHANG)
            if waited == pid { break }
            if waited < 0 && errno != EINTR { throw LabFailure("waitpid: \(String(cString: strerror(errno)))") }
            if clock.now >= deadline && !timedOut {
                timedOut = true
                kill(pid, SIGTERM)
            }
            if timedOut && clock.now >= deadline.advanced(by: .seconds(10)) { kill(pid, SIGKILL) }
            usleep(5_000)
        }
        let exitCode: Int32 = (waitStatus & 0x7f) == 0 ? (waitStatus >> 8) & 0xff : 128 + (waitStatus & 0x7f)
        lseek(outputDescriptor, 0, SEEK_SET)
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while output.count < 1 << 20 {
            let count = chunk.withUnsafeMutableBytes { read(outputDescriptor, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            output.append(contentsOf: chunk[0..<count])
        }
        return LabResult(status: exitCode, timedOut: timedOut, output: String(decoding: output, as: UTF8.self))
    }

    /// Runs a command that must succeed (setup), throwing with its output otherwise.
    public static func mustRun(_ arguments: [String], timeout: Double = 5) throws {
        let result = try run(arguments, timeout: timeout)
        if !result.succeeded { throw LabFailure("\(arguments.joined(separator: " ")) failed: \(result)") }
    }

    /// Starts a long-running child (stdio to /dev/null) and returns its pid; the caller reaps it.
    public static func start(_ arguments: [String]) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        return try spawn([locate(arguments.first ?? "")] + arguments.dropFirst(), actions: &actions)
    }

    private static func spawn(_ arguments: [String], actions: inout posix_spawn_file_actions_t) throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, arguments[0], &actions, &attributes, &argv, environ)
        guard spawned == 0 else {
            throw LabFailure("posix_spawn \(arguments[0]): \(String(cString: strerror(spawned)))")
        }
        return pid
    }
}

/// A temporary directory removed with the files in it when the value goes away.
public final class LabDirectory: @unchecked Sendable {
    public let path: String

    public init() throws {
        var template = Array("/tmp/colo-lab-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { buffer -> Bool in
            guard let base = buffer.baseAddress else { return false }
            return mkdtemp(base) != nil
        }
        guard created else { throw LabFailure("mkdtemp: \(String(cString: strerror(errno)))") }
        path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit {
        if let directory = opendir(path) {
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { unlink("\(path)/\(name)") }
            }
            closedir(directory)
        }
        rmdir(path)
    }
}
