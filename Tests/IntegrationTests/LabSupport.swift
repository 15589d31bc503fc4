import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Helpers for tests that build namespaces with the scripts in Tools/lab.
enum Lab {
    static let repositoryRoot: String = {
        let parts = #filePath.split(separator: "/").dropLast(3)
        return "/" + parts.joined(separator: "/")
    }()

    /// Records an issue and returns false when not root: these tests must fail, not skip, without privileges.
    static func requireRoot(sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        if geteuid() == 0 { return true }
        Issue.record(
            "this test builds network namespaces and needs root: run `sudo Tools/test.sh`",
            sourceLocation: sourceLocation)
        return false
    }

    /// Runs a command to completion with a time limit (coreutils `timeout`); stdout and stderr go through
    /// files so a chatty tool cannot block on a full pipe.
    ///
    /// Spawned with posix_spawn and an empty signal mask and default signal dispositions: the test runner's
    /// threads block signals, and a child that inherited that mask could not be stopped with SIGINT/SIGTERM
    /// (the lab scripts stop tcpdump that way).
    static func run(_ executable: String, _ arguments: [String], timeoutSeconds: Int = 120) throws -> (
        status: Int32, output: String, error: String
    ) {
        let directory = try temporaryDirectory("colo-run")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let out = directory + "/out"
        let err = directory + "/err"
        let argv = ["/usr/bin/timeout", "--signal=TERM", "--kill-after=10", String(timeoutSeconds), executable] + arguments

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o600)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, &attributes, &cArguments, environ)
        guard spawned == 0 else {
            return (-1, "", "posix_spawn \(argv[0]) failed: \(String(cString: strerror(spawned)))")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exitStatus: Int32 = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        let output = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        let error = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        return (exitStatus, output, error)
    }

    static func temporaryDirectory(_ prefix: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(getpid())-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
