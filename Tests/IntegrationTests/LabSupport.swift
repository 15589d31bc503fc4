@_exported import ColoLab
import ColoTestSupport
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

    /// Fails (never skips) the test when not root.
    static func requireRoot(sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        ColoTestSupport.requireRoot("this test builds network namespaces", sourceLocation: sourceLocation)
    }

    /// Runs a lab script to completion (see `Command.run`).
    static func run(_ executable: String, _ arguments: [String], timeoutSeconds: Int = 120) throws -> CommandResult {
        try Command.run([executable] + arguments, timeout: Double(timeoutSeconds))
    }
}
