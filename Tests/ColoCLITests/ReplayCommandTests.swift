import ArgumentParser
import ColoCLI
import ColoCapture
import ColoStages
import Foundation
import Testing

@Suite("colo-proxy replay on the sample captures")
struct ReplayCommandTests {
    static let samples: String = {
        let parts = #filePath.split(separator: "/").dropLast(3)
        return "/" + parts.joined(separator: "/") + "/Configs/samples"
    }()

    /// `stream_offset:` from diverge/EXPECTED.md, which the recording script computes from the captures.
    static func expectedStreamOffset() throws -> UInt64 {
        let text = try String(contentsOfFile: samples + "/diverge/EXPECTED.md", encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("stream_offset:") })
        return try #require(UInt64(line.split(separator: " ").last ?? ""))
    }

    @Test("Identical pair: no divergence, every TCP byte compared, offsets learned", arguments: [true, false])
    func identical(withClient: Bool) throws {
        var lines: [String] = []
        let report = try ReplayCommand.replay(
            primary: Self.samples + "/identical/primary.pcap", secondary: Self.samples + "/identical/secondary.pcap",
            client: withClient ? Self.samples + "/identical/client.pcap" : nil
        ) { lines.append($0) }
        #expect(report.events.isEmpty, "\(lines)")
        #expect(report.compare.bytesCompared > 20000, "the HTTP responses are compared byte for byte")
        #expect(report.compare.datagramsMatched >= 5, "UDP and ICMP echoes matched")
        #expect(report.rewriter.learned == 1)
        #expect(lines.last?.hasPrefix("summary:") == true && lines.last?.contains("0 divergences") == true)
    }

    @Test("Diverging pair: exactly one payload divergence at the expected stream offset", arguments: [true, false])
    func diverge(withClient: Bool) throws {
        let expected = try Self.expectedStreamOffset()
        var lines: [String] = []
        let report = try ReplayCommand.replay(
            primary: Self.samples + "/diverge/primary.pcap", secondary: Self.samples + "/diverge/secondary.pcap",
            client: withClient ? Self.samples + "/diverge/client.pcap" : nil, format: .json
        ) { lines.append($0) }
        #expect(report.events.count == 1)
        let event = try #require(report.events.first)
        #expect(event.reason == .payload && event.proto == "tcp" && event.family == "ipv4")
        #expect(event.streamOffset == expected)
        #expect(event.source == "10.10.0.2" && event.sourcePort == 8000 && event.destinationPort == 40080)
        #expect(lines.first?.contains("\"stream_offset\":\(expected)") == true)
        #expect(lines.last?.hasPrefix("{\"event\":\"summary\"") == true)
    }

    @Test("--divergence-pcap holds both sides' diverging packets")
    func divergencePcap() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("divergence-\(UUID()).pcap").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var settings = ReplayCommand.ReplaySettings()
        settings.divergencePcap = path
        try ReplayCommand.replay(
            primary: Self.samples + "/diverge/primary.pcap", secondary: Self.samples + "/diverge/secondary.pcap",
            client: nil, settings: settings
        ) { _ in }
        let records = try CaptureReader.readAll(path: path)
        #expect(records.count == 2, "the primary's and the secondary's segment")
    }

    @Test("The command's exit status: 0 identical, 1 diverging, 2 bad input with one line")
    func exitStatus() throws {
        let identical = try ReplayCommand.parse([
            "--primary", Self.samples + "/identical/primary.pcap", "--secondary",
            Self.samples + "/identical/secondary.pcap",
        ])
        #expect(throws: Never.self) { try identical.run() }
        let diverging = try ReplayCommand.parse([
            "--primary", Self.samples + "/diverge/primary.pcap", "--secondary",
            Self.samples + "/diverge/secondary.pcap",
        ])
        #expect { try diverging.run() } throws: { ($0 as? ExitCode) == ExitCode(1) }
        // A truncated capture and a file that is not a capture at all.
        let original = try Data(contentsOf: URL(fileURLWithPath: Self.samples + "/identical/primary.pcap"))
        let truncated = FileManager.default.temporaryDirectory.appendingPathComponent("truncated-\(UUID()).pcap")
        try original.prefix(original.count - 100).write(to: truncated)
        defer { try? FileManager.default.removeItem(at: truncated) }
        for bad in [truncated.path, #filePath] {
            let command = try ReplayCommand.parse([
                "--primary", bad, "--secondary", Self.samples + "/identical/secondary.pcap",
            ])
            #expect { try command.run() } throws: { ($0 as? ExitCode) == ExitCode(2) }
        }
    }
}
