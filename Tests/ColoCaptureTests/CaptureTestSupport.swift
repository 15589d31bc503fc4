import Foundation
import Testing

@testable import ColoCapture

/// Builds capture files byte by byte in a chosen byte order, so tests do not depend on the code under test.
struct ByteWriter {
    var bytes: [UInt8] = []
    let bigEndian: Bool

    init(bigEndian: Bool) {
        self.bigEndian = bigEndian
    }

    mutating func u8(_ value: UInt8) {
        bytes.append(value)
    }

    mutating func u16(_ value: UInt16) {
        let ordered = bigEndian ? value.bigEndian : value.littleEndian
        withUnsafeBytes(of: ordered) { bytes.append(contentsOf: $0) }
    }

    mutating func u32(_ value: UInt32) {
        let ordered = bigEndian ? value.bigEndian : value.littleEndian
        withUnsafeBytes(of: ordered) { bytes.append(contentsOf: $0) }
    }

    mutating func u64(_ value: UInt64) {
        let ordered = bigEndian ? value.bigEndian : value.littleEndian
        withUnsafeBytes(of: ordered) { bytes.append(contentsOf: $0) }
    }

    mutating func raw(_ data: [UInt8]) {
        bytes.append(contentsOf: data)
    }

    mutating func padToFour() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }
}

/// A pcap record as a test describes it: `fraction` is in the file's own unit (µs or ns).
struct PcapTestRecord {
    var seconds: UInt32
    var fraction: UInt32
    var data: [UInt8]
    var originalLength: UInt32? = nil
    /// Overrides incl_len to build corrupt files.
    var declaredLength: UInt32? = nil
}

enum PcapFixture {
    static func file(
        bigEndian: Bool, nanoseconds: Bool, linkType: UInt32 = 1, snapshotLength: UInt32 = 65_535,
        version: (UInt16, UInt16) = (2, 4), records: [PcapTestRecord]
    ) -> [UInt8] {
        var writer = ByteWriter(bigEndian: bigEndian)
        writer.u32(nanoseconds ? 0xA1B2_3C4D : 0xA1B2_C3D4)
        writer.u16(version.0)
        writer.u16(version.1)
        writer.u32(0)
        writer.u32(0)
        writer.u32(snapshotLength)
        writer.u32(linkType)
        for record in records {
            writer.u32(record.seconds)
            writer.u32(record.fraction)
            writer.u32(record.declaredLength ?? UInt32(record.data.count))
            writer.u32(record.originalLength ?? UInt32(record.data.count))
            writer.raw(record.data)
        }
        return writer.bytes
    }
}

/// pcapng blocks; each function returns a whole block (type, length, body, length) in the given byte order.
enum PcapngFixture {
    static func block(
        type: UInt32, body: [UInt8], bigEndian: Bool, declaredLength: UInt32? = nil,
        trailer: UInt32? = nil
    ) -> [UInt8] {
        var writer = ByteWriter(bigEndian: bigEndian)
        let length = UInt32(12 + body.count)
        writer.u32(type)
        writer.u32(declaredLength ?? length)
        writer.raw(body)
        writer.u32(trailer ?? declaredLength ?? length)
        return writer.bytes
    }

    static func sectionHeader(bigEndian: Bool) -> [UInt8] {
        var body = ByteWriter(bigEndian: bigEndian)
        body.u32(0x1A2B_3C4D)
        body.u16(1)
        body.u16(0)
        body.u64(UInt64.max)  // section length unknown
        return block(type: 0x0A0D_0D0A, body: body.bytes, bigEndian: bigEndian)
    }

    /// `resolution` is the raw if_tsresol byte; nil leaves the option out (10^-6 by default).
    static func interfaceDescription(
        bigEndian: Bool, linkType: UInt16, snapshotLength: UInt32 = 0, resolution: UInt8? = nil,
        offsetSeconds: Int64? = nil
    ) -> [UInt8] {
        var body = ByteWriter(bigEndian: bigEndian)
        body.u16(linkType)
        body.u16(0)
        body.u32(snapshotLength)
        // if_name first, with a length that needs padding, to prove options are walked correctly.
        let name = Array("eth0!".utf8)
        body.u16(2)
        body.u16(UInt16(name.count))
        body.raw(name)
        body.padToFour()
        if let resolution {
            body.u16(9)
            body.u16(1)
            body.u8(resolution)
            body.padToFour()
        }
        if let offsetSeconds {
            body.u16(14)
            body.u16(8)
            body.u64(UInt64(bitPattern: offsetSeconds))
        }
        body.u16(0)
        body.u16(0)
        return block(type: 1, body: body.bytes, bigEndian: bigEndian)
    }

    static func enhancedPacket(
        bigEndian: Bool, interface: UInt32, units: UInt64, data: [UInt8], originalLength: UInt32? = nil,
        withComment: Bool = false
    ) -> [UInt8] {
        var body = ByteWriter(bigEndian: bigEndian)
        body.u32(interface)
        body.u32(UInt32(truncatingIfNeeded: units >> 32))
        body.u32(UInt32(truncatingIfNeeded: units))
        body.u32(UInt32(data.count))
        body.u32(originalLength ?? UInt32(data.count))
        body.raw(data)
        body.padToFour()
        if withComment {
            let comment = Array("hi".utf8)
            body.u16(1)
            body.u16(UInt16(comment.count))
            body.raw(comment)
            body.padToFour()
            body.u16(0)
            body.u16(0)
        }
        return block(type: 6, body: body.bytes, bigEndian: bigEndian)
    }

    static func simplePacket(bigEndian: Bool, originalLength: UInt32, data: [UInt8]) -> [UInt8] {
        var body = ByteWriter(bigEndian: bigEndian)
        body.u32(originalLength)
        body.raw(data)
        body.padToFour()
        return block(type: 3, body: body.bytes, bigEndian: bigEndian)
    }
}

/// A file under /tmp with a name no other test (or test run) uses, removed when the test is done.
struct TemporaryFile: ~Copyable {
    let path: String

    init(_ bytes: [UInt8] = []) {
        path = "/tmp/colo-capture-test-\(getpid())-\(UUID().uuidString).pcap"
        if !FileManager.default.createFile(atPath: path, contents: Data(bytes)) {
            Issue.record("could not create the temporary file \(path)")
        }
    }

    func contents() -> [UInt8] {
        FileManager.default.contents(atPath: path).map { Array($0) } ?? []
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// Reads a file and returns either its records or the error, so tests can assert on both without do/catch noise.
func readCapture(_ path: String) -> Result<[OwnedRecord], CaptureError> {
    Result { () throws(CaptureError) in try CaptureReader.readAll(path: path) }
}

func readCapture(bytes: [UInt8]) -> Result<[OwnedRecord], CaptureError> {
    let file = TemporaryFile(bytes)
    return readCapture(file.path)
}

extension Result {
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }

    var success: Success? {
        if case .success(let value) = self { return value }
        return nil
    }
}

/// A deterministic byte pattern so a shifted or truncated copy shows up as a mismatch.
func patternBytes(count: Int, seed: UInt8) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
}
