@_exported import ColoLab
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

// Shared by the test targets that drive real programs and namespaces (LAB.md). The command runner and the
// temporary directory are ColoLab's (the demo uses the same ones); the names here are the ones the tests use.

/// Records an issue and returns false when not root: tests that build namespaces must fail, not skip, without
/// privileges.
public func requireRoot(_ what: String, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
    if geteuid() == 0 { return true }
    Issue.record("needs root: run sudo Tools/test.sh (\(what))", sourceLocation: sourceLocation)
    return false
}

/// A test failure in the lab plumbing itself (spawning, namespaces), with what was attempted.
public typealias LabError = LabFailure

extension LabFailure {
    public init(description: String) { self.init(description) }
}

/// What a finished (or killed) command left behind.
public typealias CommandResult = LabResult

/// Runs commands with posix_spawn: an empty signal mask and default dispositions (the test runner's threads block
/// signals, and children would inherit that), output into a temporary file; after `timeout` seconds SIGTERM (so a
/// script's cleanup trap runs), then SIGKILL 10 seconds later.
public typealias Command = LabShell

/// A temporary directory removed with everything in it when the value goes away.
public typealias TemporaryDirectory = LabDirectory
