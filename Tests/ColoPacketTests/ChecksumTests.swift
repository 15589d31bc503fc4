import ColoPacket
import ColoPacketBuilder
import Testing

@Suite("Checksums")
struct ChecksumTests {
    @Test("RFC 1071 example sums to 0xddf2")
    func rfc1071Example() {
        let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]
        #expect(bytes.withUnsafeBytes { Checksum.sum($0) } == 0xDDF2)
    }

    @Test("Sum matches a byte-at-a-time reference for every length and alignment")
    func sumMatchesReference() {
        var generator = SystemRandomNumberGenerator()
        for length in 0..<200 {
            let bytes = (0..<(length + 3)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            for start in 0..<3 {
                let slice = Array(bytes[start..<(start + length)])
                var reference: UInt32 = 0
                var i = 0
                while i + 1 < slice.count {
                    reference += UInt32(slice[i]) << 8 | UInt32(slice[i + 1])
                    i += 2
                }
                if i < slice.count { reference += UInt32(slice[i]) << 8 }
                while reference > 0xFFFF { reference = (reference & 0xFFFF) + (reference >> 16) }
                let fast = bytes.withUnsafeBytes {
                    Checksum.sum(UnsafeRawBufferPointer(rebasing: $0[start..<(start + length)]))
                }
                #expect(UInt32(fast) == reference, "length \(length) offset \(start)")
            }
        }
    }

    @Test("Incremental update equals recomputation, 16- and 32-bit fields")
    func incrementalUpdate() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<500 {
            let seq = UInt32.random(in: 0...UInt32.max, using: &generator)
            let ack = UInt32.random(in: 0...UInt32.max, using: &generator)
            let delta = UInt32.random(in: 0...UInt32.max, using: &generator)
            let payload = (0..<Int.random(in: 0..<64, using: &generator)).map { _ in UInt8.random(in: 0...255) }
            var frame = PacketBuilder.tcp4(
                TCPSpec(sequenceNumber: seq, acknowledgmentNumber: ack, flags: [.ack, .psh], payload: payload))
            let layout = try frame.withUnsafeBytes { try PacketParser.parse($0, linkType: .ethernet) }
            frame.withUnsafeMutableBytes {
                TCPFieldEditor.addToSequenceAndAcknowledgment(
                    sequenceDelta: delta, ackDelta: 0 &- delta, in: $0, layout: layout)
            }
            try withParsed(frame) { p in
                #expect(p.tcp?.sequenceNumber == seq &+ delta)
                #expect(p.tcp?.acknowledgmentNumber == ack &- delta)
                #expect(p.transportChecksumStatus == .valid, "seq \(seq) ack \(ack) delta \(delta)")
            }
        }
        // 16-bit update: change a port and patch the checksum.
        let old: UInt16 = 0x1234
        let new: UInt16 = 0xFEDC
        let bytes: [UInt8] = [0x12, 0x34, 0xAB, 0xCD]
        let before = Checksum.finish(bytes.withUnsafeBytes { Checksum.sum($0) })
        let after = Checksum.finish(([0xFE, 0xDC, 0xAB, 0xCD] as [UInt8]).withUnsafeBytes { Checksum.sum($0) })
        #expect(Checksum.update(before, old: old, new: new) == after)
    }

    @Test("SACK edges and seq/ack on IPv6 keep a valid checksum")
    func sackEdgesIPv6() throws {
        var frame = PacketBuilder.tcp6(
            TCPSpec(
                sequenceNumber: 5, acknowledgmentNumber: 6, flags: .ack,
                options: [
                    .noOperation, .noOperation, .sack([SACKEdge(left: 10, right: 20), SACKEdge(left: 30, right: 40)]),
                ]
            ))
        let layout = try frame.withUnsafeBytes { try PacketParser.parse($0, linkType: .ethernet) }
        let changed = frame.withUnsafeMutableBytes { buffer in
            TCPFieldEditor.addToSequenceNumber(100, in: buffer, layout: layout)
            TCPFieldEditor.addToAcknowledgmentNumber(0 &- 1, in: buffer, layout: layout)
            return TCPFieldEditor.addToSACKEdges(1000, in: buffer, layout: layout)
        }
        #expect(changed == 2)
        try withParsed(frame) { p in
            let tcp = try #require(p.tcp)
            #expect(tcp.sequenceNumber == 105 && tcp.acknowledgmentNumber == 5)
            let blocks = try #require(tcp.sackBlocks)
            #expect(blocks[0].left == 1010 && blocks[0].right == 1020 && blocks[1].right == 1040)
            #expect(p.transportChecksumStatus == .valid)
        }
    }

    @Test("ChecksumWriter fixes deliberately broken checksums")
    func writerFixes() throws {
        var ip = IPv4Spec()
        ip.corruptHeaderChecksum = true
        var tcp = TCPSpec(flags: .ack, payload: [1, 2, 3])
        tcp.corruptChecksum = true
        var frame = PacketBuilder.tcp4(tcp, ip: ip)
        try withParsed(frame) { p in
            #expect(!p.isIPv4HeaderChecksumValid)
            guard case .invalid = p.transportChecksumStatus else {
                Issue.record("expected an invalid TCP checksum before fixing")
                return
            }
        }
        let layout = try frame.withUnsafeBytes { try PacketParser.parse($0, linkType: .ethernet) }
        frame.withUnsafeMutableBytes { ChecksumWriter.fill($0, layout: layout) }
        try withParsed(frame) { p in
            #expect(p.isIPv4HeaderChecksumValid)
            #expect(p.transportChecksumStatus == .valid)
        }
    }
}
