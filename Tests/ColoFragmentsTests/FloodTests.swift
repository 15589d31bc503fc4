import ColoFragments
import ColoPacket
import Testing

@Suite("Fragment floods")
struct FloodTests {
    /// Writes a random IPv4 or IPv6 fragment into `buffer` and returns its length.
    static func randomFragment(
        into buffer: UnsafeMutableRawBufferPointer, window: Int, using rng: inout SplitMix64
    ) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        let more = Int.random(in: 0..<10, using: &rng) < 7
        // Mostly small offsets so fragments of one datagram meet; sometimes near the 64 KiB limit.
        let offset =
            Int.random(in: 0..<500, using: &rng) == 0
            ? Int.random(in: 8000..<8192, using: &rng) * 8 : Int.random(in: 0..<8, using: &rng) * 1480
        // Mostly plausible sizes, with enough runts and odd lengths to hit every refusal.
        var length = Int.random(in: 0..<10, using: &rng) == 0 ? Int.random(in: 0..<400, using: &rng) : 1480
        if Int.random(in: 0..<20, using: &rng) != 0 { length = length / 8 * 8 } else { length -= 1 }
        length = max(length, 0)
        // A few ids at a time, so fragments of one datagram meet; the window then moves on.
        let identification = UInt32(truncatingIfNeeded: window * 4) + UInt32.random(in: 0..<4, using: &rng)
        let isIPv6 = Int.random(in: 0..<4, using: &rng) == 0
        let source = UInt32(0x0A0A_0001) + UInt32.random(in: 0..<2, using: &rng)
        for i in 0..<length { buffer[64 + i] = UInt8(truncatingIfNeeded: i &+ Int(identification)) }
        if isIPv6 {
            let header = 48
            buffer.storeBytes(of: UInt32(0x6000_0000).bigEndian, toByteOffset: 0, as: UInt32.self)
            buffer.storeBytes(of: UInt16(8 + length).bigEndian, toByteOffset: 4, as: UInt16.self)
            buffer[6] = IPProtocol.ipv6Fragment
            buffer[7] = 64
            for i in 8..<40 { buffer[i] = 0 }
            buffer.storeBytes(of: source.bigEndian, toByteOffset: 20, as: UInt32.self)
            buffer[40] = IPProtocol.udp
            buffer[41] = 0
            let field = UInt16(truncatingIfNeeded: offset) & 0xFFF8 | (more ? 1 : 0)
            buffer.storeBytes(of: field.bigEndian, toByteOffset: 42, as: UInt16.self)
            buffer.storeBytes(of: identification.bigEndian, toByteOffset: 44, as: UInt32.self)
            (base + header).copyMemory(from: base + 64, byteCount: length)
            return header + length
        }
        let header = 20
        buffer[0] = 0x45
        buffer[1] = 0
        buffer.storeBytes(of: UInt16(header + length).bigEndian, toByteOffset: 2, as: UInt16.self)
        buffer.storeBytes(of: UInt16(truncatingIfNeeded: identification).bigEndian, toByteOffset: 4, as: UInt16.self)
        let field = UInt16(truncatingIfNeeded: offset / 8) & 0x1FFF | (more ? 0x2000 : 0)
        buffer.storeBytes(of: field.bigEndian, toByteOffset: 6, as: UInt16.self)
        buffer[8] = 64
        buffer[9] = IPProtocol.udp
        buffer.storeBytes(of: source.bigEndian, toByteOffset: 12, as: UInt32.self)
        buffer.storeBytes(of: UInt32(0x0A0A_0002).bigEndian, toByteOffset: 16, as: UInt32.self)
        (base + header).copyMemory(from: base + 64, byteCount: length)
        return header + length
    }

    @Test("100k random fragments with a small budget: memory stays bounded, every token comes back once")
    func randomFlood() {
        let configuration = FragmentReassembler.Configuration(
            maxDatagrams: 64, timeout: 50_000_000, maxFragmentsPerDatagram: 4, maxBufferBytes: 256 * 1024)
        let reassembler = FragmentReassembler(configuration: configuration)
        let total = 100_000
        var returned = [UInt8](repeating: 0, count: total)
        var submitted = [Bool](repeating: false, count: total)
        var rng = SplitMix64(state: 0x00C0_10F1_A600)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2048, alignment: 16)
        defer { buffer.deallocate() }
        var now: UInt64 = 0
        var boundsHeld = true
        var peakBufferBytes: UInt64 = 0
        let countOnce = { (tokens: FragmentTokens) in
            for token in tokens { returned[Int(token)] &+= 1 }
        }

        for token in 0..<total {
            now += 200_000  // 0.2 ms: 250 fragments per 50 ms timeout, so the table turns over
            let length = Self.randomFragment(into: buffer, window: token / 200, using: &rng)
            let packet = UnsafeRawBufferPointer(rebasing: buffer[0..<length])
            guard let layout = try? PacketParser.parse(packet, linkType: .rawIP) else { continue }
            let result = reassembler.submit(
                packet, layout: layout, zone: UInt16(token & 1), now: now, token: UInt64(token))
            switch result {
            case .notAFragment: break
            case .held: submitted[token] = true
            case .completed(let datagram):
                submitted[token] = true
                countOnce(datagram.tokens)
            case .dropped(_, let tokens):
                submitted[token] = true
                countOnce(tokens)
            }
            if token % 100 == 0 { reassembler.expire(now: now, countOnce) }
            let c = reassembler.counters
            peakBufferBytes = max(peakBufferBytes, c.bufferBytes)
            if c.currentDatagrams > 64 || c.bufferBytes > 256 * 1024 || c.currentBytes > c.bufferBytes {
                boundsHeld = false
            }
        }
        reassembler.flush(countOnce)

        #expect(boundsHeld, "datagrams ≤ 64, buffers ≤ 256 KiB and held data ≤ buffers after every fragment")
        #expect(peakBufferBytes <= 256 * 1024)
        let c = reassembler.counters
        #expect(c.currentDatagrams == 0 && c.currentBytes == 0)
        #expect(c.accepted > 10_000, "accepted \(c.accepted)")
        #expect(c.expired > 0 && c.overlap > 0 && c.tooSmall > 0 && c.oversize > 0 && c.malformed > 0)
        #expect(c.purged > 0 && c.tooManyFragments > 0, "purged \(c.purged), tooMany \(c.tooManyFragments)")
        var wrong = 0
        for token in 0..<total where returned[token] != (submitted[token] ? 1 : 0) { wrong += 1 }
        #expect(wrong == 0, "every submitted token comes back exactly once; \(wrong) did not")
    }
}
