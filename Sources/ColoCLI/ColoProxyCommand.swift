import ArgumentParser

/// The `colo-proxy` command: a userspace COLO proxy for Linux.
public struct ColoProxyCommand: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "colo-proxy",
        abstract: "A userspace COLO proxy: mirrors, rewrites and compares the traffic of a primary/secondary VM pair.",
        version: "0.1.0",
        subcommands: [
            RunCommand.self, DemoCommand.self, ReplayCommand.self, ConntrackCommand.self, CtlCommand.self,
            LoadgenCommand.self,
        ]
    )

    public init() {}
}
