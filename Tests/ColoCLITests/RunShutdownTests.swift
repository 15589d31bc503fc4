import ColoCapture
import ColoPacket
import ColoPacketBuilder
import ColoTestSupport
import Foundation
import Testing

/// `colo-proxy run` as a user starts it (the built binary), on pcap ports.
@Suite("run: graceful shutdown")
struct RunShutdownTests {
    static let binary: String = {
        let root = #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        return "/" + root + "/.build/debug/colo-proxy"
    }()

    static func datagram(_ index: Int) -> [UInt8] {
        PacketBuilder.build(
            .ipv4(
                IPv4Spec(source: IPv4Address(10, 10, 0, 2), destination: IPv4Address(10, 10, 0, 1)),
                .udp(
                    UDPSpec(
                        sourcePort: 53, destinationPort: 6000 + UInt16(index), payload: Array("reply \(index)".utf8)))))
    }

    static func writeCapture(_ path: String, _ frames: [[UInt8]]) throws {
        let writer = try PcapWriter(path: path, linkType: .ethernet)
        for (index, frame) in frames.enumerated() {
            try writer.write(bytes: frame, timestampNanoseconds: 1_000_000_000 + UInt64(index) * 1000)
        }
        try writer.close()
    }

    @Test("SIGTERM with held packets: the primary's are released to the outdev, the count is logged")
    func sigtermReleasesHeld() throws {
        let directory = try TemporaryDirectory()
        let primary = "\(directory.path)/primary.pcap"
        let secondary = "\(directory.path)/secondary.pcap"
        let output = "\(directory.path)/out.pcap"
        try Self.writeCapture(primary, (0..<3).map(Self.datagram))
        try Self.writeCapture(secondary, [Self.datagram(0)])

        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = [
            "run", "--no-control", "--conntrack-events", "--event-log", "\(directory.path)/events.jsonl",
            "--port", "pcap,id=pin,file=\(primary),mode=read", "--port", "pcap,id=sin,file=\(secondary),mode=read",
            "--port", "pcap,id=out,file=\(output),mode=write",
            "--object", "colo-compare,id=cmp,primary_in=pin,secondary_in=sin,outdev=out,compare_timeout=60000",
        ]
        let log = Pipe()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        // The matched datagram goes out at once; the other two wait for a secondary that never answers.
        usleep(1_000_000)
        #expect(process.isRunning)
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!process.isRunning, "run did not stop on SIGTERM")
        if process.isRunning { process.terminate() }
        let text = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(text)")
        #expect(text.contains("released 2 held primary packets"), "\(text)")
        // --conntrack-events: the replicas' datagrams open UDP connections in zones 1 and 2.
        #expect(text.contains("[NEW] udp"), "\(text)")
        #expect(text.contains("zone=1") && text.contains("zone=2"), "\(text)")

        let released = try CaptureReader.readAll(path: output)
        #expect(released.map(\.bytes) == (0..<3).map(Self.datagram))
    }
}
