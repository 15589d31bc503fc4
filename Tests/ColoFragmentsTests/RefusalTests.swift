import ColoFragments
import ColoPacket
import ColoPacketBuilder
import Testing

@Suite("Refusing bad fragments and bounding memory")
struct RefusalTests {
    @Test("Overlapping fragments invalidate the datagram and give back every token")
    func overlap() throws {
        let original = udp4()
        let reassembler = FragmentReassembler()
        #expect(try reassembler.offer(fragment4(original, 0, 1480), token: 10) == .held)
        #expect(try reassembler.offer(fragment4(original, 1000, 2480), token: 11) == .dropped(.overlap, [10, 11]))
        let c = reassembler.counters
        #expect(c.overlap == 1 && c.droppedFragments == 2 && c.currentDatagrams == 0 && c.currentBytes == 0)
    }

    @Test("An exact duplicate invalidates the datagram")
    func exactDuplicate() throws {
        let original = udp4()
        let reassembler = FragmentReassembler()
        #expect(try reassembler.offer(fragment4(original, 1480, 2960), token: 1) == .held)
        #expect(try reassembler.offer(fragment4(original, 0, 1480), token: 2) == .held)
        #expect(try reassembler.offer(fragment4(original, 1480, 2960), token: 3) == .dropped(.overlap, [1, 2, 3]))
        #expect(reassembler.counters.overlap == 1)
    }

    @Test("A second last fragment with another end is inconsistent; so is data beyond the end")
    func inconsistentEnds() throws {
        let original = udp4()
        let reassembler = FragmentReassembler()
        #expect(try reassembler.offer(fragment4(original, 1480, 2000, more: false), token: 1) == .held)
        #expect(
            try reassembler.offer(fragment4(original, 2960, 2980), token: 2) == .dropped(.overlap, [1, 2]),
            "second last fragment")
        #expect(try reassembler.offer(fragment4(original, 2960, 2980), token: 3) == .held)
        #expect(
            try reassembler.offer(fragment4(original, 2960, 2980), token: 4) == .dropped(.overlap, [3, 4]),
            "the same last fragment twice")
        #expect(try reassembler.offer(fragment4(original, 2000, 2480, more: false), token: 5) == .held)
        #expect(
            try reassembler.offer(fragment4(original, 2480, 2960), token: 6) == .dropped(.overlap, [5, 6]),
            "data past the end the last fragment fixed")
        #expect(reassembler.counters.overlap == 3)
    }

    @Test("A non-last fragment under 400 bytes drops the whole datagram")
    func tooSmall() throws {
        let original = udp4()
        let reassembler = FragmentReassembler()
        #expect(try reassembler.offer(fragment4(original, 0, 392), token: 1) == .dropped(.tooSmall, [1]))
        #expect(try reassembler.offer(fragment4(original, 0, 400), token: 2) == .held, "400 bytes is enough")
        #expect(try reassembler.offer(fragment4(original, 400, 792), token: 3) == .dropped(.tooSmall, [2, 3]))
        #expect(try reassembler.offer(fragment4(original, 2960, 2980), token: 4) == .held, "a last one may be small")
        let c = reassembler.counters
        #expect(c.tooSmall == 2 && c.currentDatagrams == 1 && c.accepted == 2)
    }

    @Test("A non-last fragment not a multiple of 8 bytes is malformed")
    func unalignedNonLast() throws {
        let original = udp4()
        #expect(try FragmentReassembler().offer(fragment4(original, 0, 1001), token: 1) == .dropped(.malformed, [1]))
    }

    @Test("A fragment reaching past 65535 bytes is oversize")
    func oversize() throws {
        var ip = IPv4Spec()
        ip.dontFragment = false
        ip.fragmentOffset = 65000
        let tail = PacketBuilder.ipv4(ip, .raw(protocolNumber: IPProtocol.udp, bytes: pattern(600)))
        let reassembler = FragmentReassembler()
        #expect(try reassembler.offer(tail, token: 1) == .dropped(.oversize, [1]))
        ip.fragmentOffset = 64000
        let fits = PacketBuilder.ipv4(ip, .raw(protocolNumber: IPProtocol.udp, bytes: pattern(600)))
        #expect(try reassembler.offer(fits, token: 2) == .held, "20 + 64000 + 600 bytes fits")

        var ip6 = IPv6Spec()
        ip6.extensionHeaders = [.fragment(offset: 65000, more: false, identification: 5)]
        let tail6 = PacketBuilder.ipv6(ip6, .raw(protocolNumber: IPProtocol.udp, bytes: pattern(600)))
        #expect(try reassembler.offer(tail6, token: 3) == .dropped(.oversize, [3]))
        #expect(reassembler.counters.oversize == 2)
    }

    @Test("More fragments than allowed drops the datagram with all of its tokens")
    func tooManyFragments() throws {
        let original = udp4(totalLength: 1500)
        let fragments = split4(original, at: [8, 16, 24, 32])
        let reassembler = FragmentReassembler(
            configuration: .init(minimumFragmentSize: 8, maxFragmentsPerDatagram: 4))
        let outcomes = try reassembler.offerAll(fragments)
        #expect(Array(outcomes.prefix(4)) == [.held, .held, .held, .held])
        #expect(outcomes[4] == .dropped(.tooManyFragments, [0, 1, 2, 3, 4]))
        #expect(reassembler.counters.tooManyFragments == 1)
    }

    @Test("A datagram expires 15 s after its first fragment, not before")
    func expiry() throws {
        let original = udp4()
        let reassembler = FragmentReassembler()
        let start = 1000 * second
        #expect(try reassembler.offer(fragment4(original, 0, 1480), zone: 3, now: start, token: 7) == .held)
        let later = start + 5 * second
        #expect(try reassembler.offer(fragment4(original, 1480, 2960), zone: 3, now: later, token: 8) == .held)
        #expect(reassembler.nextExpiry == start + 15 * second)
        var expired: [[UInt64]] = []
        var zones: [UInt16] = []
        let collect = { (tokens: FragmentTokens) in
            expired.append(Array(tokens))
            zones.append(tokens.zone)
        }
        #expect(reassembler.expire(now: start + 15 * second - 1, collect) == 0)
        #expect(expired.isEmpty && reassembler.counters.currentDatagrams == 1, "still alive just before 15 s")
        #expect(reassembler.expire(now: start + 15 * second, collect) == 1)
        #expect(expired == [[7, 8]] && zones == [3], "tokens in arrival order, with their zone")
        let c = reassembler.counters
        #expect(c.expired == 1 && c.droppedFragments == 2 && c.currentDatagrams == 0 && c.currentBytes == 0)
        #expect(reassembler.nextExpiry == nil)
    }

    @Test("A late fragment of a datagram that ran out of time is dropped with it, even before expire runs")
    func lateFragment() throws {
        let original = udp4()
        let reassembler = FragmentReassembler()
        #expect(try reassembler.offer(fragment4(original, 0, 1480), now: 0, token: 1) == .held)
        #expect(try reassembler.offer(fragment4(original, 1480, 2960), now: 14 * second, token: 2) == .held)
        #expect(
            try reassembler.offer(fragment4(original, 2960, 2980), now: 16 * second, token: 3)
                == .dropped(.timedOut, [1, 2, 3]))
        #expect(reassembler.counters.expired == 1 && reassembler.counters.completed == 0)
    }

    @Test("The 1001st datagram is refused and counted; the 1000 in progress are kept")
    func tableFull() throws {
        let reassembler = FragmentReassembler()
        let originals = (0..<1001).map { udp4(identification: UInt16($0)) }
        for index in 0..<1000 {
            #expect(try reassembler.offer(fragment4(originals[index], 0, 1480), now: 0, token: UInt64(index)) == .held)
        }
        #expect(
            try reassembler.offer(fragment4(originals[1000], 0, 1480), now: 1, token: 1000)
                == .dropped(.tableFull, [1000]))
        #expect(reassembler.counters.purged == 1 && reassembler.counters.currentDatagrams == 1000)
        // Datagrams already in progress still complete, and free their place.
        #expect(try reassembler.offer(fragment4(originals[5], 1480, 2960), now: 2, token: 2000) == .held)
        let done = try #require(
            try reassembler.offer(fragment4(originals[5], 2960, 2980), now: 2, token: 2001).completed)
        #expect(done.bytes == originals[5] && done.tokens == [5, 2000, 2001])
        #expect(try reassembler.offer(fragment4(originals[1000], 0, 1480), now: 3, token: 1001) == .held)
        #expect(reassembler.expire(now: 15 * second) == 999)
        #expect(reassembler.counters.currentDatagrams == 1)
    }

    @Test("The buffer budget frees idle buffers first, then refuses new data")
    func memoryBudget() throws {
        let reassembler = FragmentReassembler(configuration: .init(maxBufferBytes: 7168))
        let (a, b, c, d) = (
            udp4(identification: 1), udp4(identification: 2), udp4(identification: 3), udp4(identification: 4)
        )
        #expect(try reassembler.offerAll(split4(a, at: [1480, 2960])).last?.completed?.bytes == a)
        #expect(reassembler.counters.bufferBytes == 4096, "one buffer, doubled once, now idle")
        #expect(try reassembler.offer(fragment4(b, 0, 1480), token: 20) == .held)
        #expect(reassembler.counters.bufferBytes == 4096, "b reuses the idle buffer")
        #expect(try reassembler.offer(fragment4(c, 0, 1480), token: 30) == .held)
        #expect(reassembler.counters.bufferBytes == 6144)
        #expect(try reassembler.offer(fragment4(c, 2960, 2980), token: 31) == .held)
        #expect(reassembler.counters.bufferBytes == 7140, "c grows to exactly 64 + 2980 when doubling does not fit")
        #expect(try reassembler.offer(fragment4(d, 0, 1480), token: 40) == .dropped(.memoryFull, [40]))
        #expect(reassembler.counters.purged == 1)

        // Once b and c are done their buffers sit idle and are released for a bigger datagram.
        #expect(try reassembler.offer(fragment4(b, 1480, 2960), token: 21) == .held)
        #expect(try reassembler.offer(fragment4(b, 2960, 2980), token: 22).completed?.bytes == b)
        #expect(try reassembler.offer(fragment4(c, 1480, 2960), token: 32).completed?.bytes == c)
        let big = udp4(totalLength: 6000, identification: 5)
        let outcomes = try reassembler.offerAll(split4(big, at: [1480, 2960, 4440]), order: [3, 0, 1, 2])
        #expect(outcomes.last?.completed?.bytes == big)
        #expect(reassembler.counters.bufferBytes == 6088, "the idle 4 KiB buffer was freed to grow to 6088")
    }

    @Test("flush hands back every held token without counting drops")
    func flush() throws {
        let reassembler = FragmentReassembler()
        _ = try reassembler.offer(fragment4(udp4(identification: 1), 0, 1480), token: 1)
        _ = try reassembler.offer(fragment4(udp4(identification: 2), 0, 1480), token: 2)
        var tokens: [UInt64] = []
        reassembler.flush { tokens += $0 }
        #expect(tokens == [1, 2])
        #expect(reassembler.counters.currentDatagrams == 0 && reassembler.counters.droppedFragments == 0)
    }
}
