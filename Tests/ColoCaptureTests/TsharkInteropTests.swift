import Foundation
import Testing

@testable import ColoCapture

/// Checks that a real dissector accepts our files, which our own reader cannot prove.
@Suite struct TsharkInteropTests {
    static let tsharkPath = "/usr/bin/tshark"

    /// Ethernet + IPv4 (valid header checksum) + UDP to port 9 with a 4-byte payload: 46 bytes.
    static func udpFrame() -> [UInt8] {
        let payload = Array("ping".utf8)
        var ip: [UInt8] = [
            0x45, 0x00, 0, UInt8(20 + 8 + payload.count), 0x12, 0x34, 0x40, 0x00, 64, 17, 0, 0,
            10, 0, 0, 1, 10, 0, 0, 2,
        ]
        var sum: UInt32 = 0
        for index in stride(from: 0, to: 20, by: 2) {
            sum += UInt32(ip[index]) << 8 | UInt32(ip[index + 1])
        }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        let checksum = ~UInt16(sum)
        ip[10] = UInt8(checksum >> 8)
        ip[11] = UInt8(checksum & 0xFF)
        let udp: [UInt8] = [0x9C, 0x40, 0x00, 0x09, 0, UInt8(8 + payload.count), 0, 0]
        let ethernet: [UInt8] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]
        return ethernet + ip + udp + payload
    }

    @Test(arguments: [PcapTimestampResolution.microseconds, .nanoseconds])
    func tsharkReadsOurPcap(resolution: PcapTimestampResolution) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.tsharkPath) else {
            Issue.record("\(Self.tsharkPath) is not installed; run Tools/install-deps.sh (as root) to install tshark")
            return
        }
        let file = TemporaryFile()
        let writer = try PcapWriter(path: file.path, linkType: .ethernet, resolution: resolution)
        let frame = Self.udpFrame()
        try writer.write(bytes: frame, timestampNanoseconds: 1_700_000_000_250_000_000)
        try writer.close()

        let (status, stdout, stderr) = try Self.run(
            Self.tsharkPath,
            [
                "-o", "ip.check_checksum:TRUE", "-r", file.path, "-T", "fields", "-E", "separator=,",
                "-e", "frame.len", "-e", "udp.dstport", "-e", "ip.checksum.status", "-e", "frame.time_epoch",
            ])
        #expect(status == 0, "tshark failed: \(stderr)")
        let fields = stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ",").map(String.init)
        #expect(fields.count == 4, "tshark printed \(stdout) (stderr: \(stderr))")
        guard fields.count == 4 else { return }
        #expect(fields[0] == "\(frame.count)", "frame.len")
        #expect(fields[1] == "9", "udp.dstport")
        #expect(fields[2] == "1", "ip.checksum.status: 1 is Good (0 Bad, 2 Unverified)")
        #expect(fields[3].hasPrefix("1700000000.25"), "frame.time_epoch \(fields[3])")
    }

    /// editcap writes pcapng the way Wireshark does (SHB and IDB options, if_tsresol for ns), which our
    /// hand-built fixtures can only imitate.
    @Test(arguments: [PcapTimestampResolution.microseconds, .nanoseconds])
    func weReadPcapngWrittenByEditcap(resolution: PcapTimestampResolution) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.editcapPath) else {
            Issue.record("\(Self.editcapPath) is not installed; run Tools/install-deps.sh (as root) to install tshark")
            return
        }
        let pcap = TemporaryFile()
        let writer = try PcapWriter(path: pcap.path, linkType: .ethernet, resolution: resolution)
        let frames = [Self.udpFrame(), patternBytes(count: 1514, seed: 3), patternBytes(count: 61, seed: 4)]
        for (index, frame) in frames.enumerated() {
            try writer.write(bytes: frame, timestampNanoseconds: 1_700_000_000_123_456_789 + UInt64(index) * 1_001)
        }
        try writer.close()
        let pcapng = TemporaryFile()
        let (status, _, stderr) = try Self.run(Self.editcapPath, ["-F", "pcapng", pcap.path, pcapng.path])
        #expect(status == 0, "editcap failed: \(stderr)")

        let original = try CaptureReader.readAll(path: pcap.path)
        let converted = try CaptureReader(path: pcapng.path)
        #expect(converted.format == .pcapng)
        var records: [OwnedRecord] = []
        while let record = try converted.next() {
            records.append(OwnedRecord(record))
        }
        #expect(records == original, "pcapng from editcap carries the same packets and timestamps")
    }

    static let editcapPath = "/usr/bin/editcap"

    /// Runs a tool to completion; stderr goes to a file so a chatty tool cannot block on a full pipe.
    static func run(_ tool: String, _ arguments: [String]) throws -> (Int32, String, String) {
        let errorFile = TemporaryFile()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: errorFile.path)
        try process.run()
        let stdout = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let stderr = String(decoding: errorFile.contents(), as: UTF8.self)
        return (process.terminationStatus, stdout, stderr)
    }
}
