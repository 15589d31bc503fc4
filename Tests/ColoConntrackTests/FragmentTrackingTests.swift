import ColoConntrack
import ColoFragments
import ColoPacket
import ColoPacketBuilder
import Testing

@Suite("Fragments through the tracker")
struct FragmentTrackingTests {
    /// Runs frames (raw IP) through a FragmentAwareTracker; returns each frame's state by index.
    static func run(_ frames: [[UInt8]], steps: [UInt64]? = nil, flushAtEnd: Bool = true) -> [Int: String] {
        let tracker = FragmentAwareTracker(tracker: ConnectionTracker())
        var states: [Int: String] = [:]
        let deliver: (UInt64, TrackResult) -> Void = { token, result in states[Int(token)] = result.state.description }
        var now: UInt64 = 1_000 * second
        for (index, frame) in frames.enumerated() {
            now += steps?[index] ?? 0
            frame.withUnsafeBytes { raw in
                guard let packet = try? Packet(raw, linkType: .rawIP) else { return }
                tracker.process(packet, zone: 0, now: now, token: UInt64(index), deliver: deliver)
            }
            tracker.expire(now: now, deliver: deliver)
        }
        if flushAtEnd { tracker.flush(deliver: deliver) }
        return states
    }

    static func fragmentedUDP(from: IPv4Address, to: IPv4Address, id: UInt16, sport: UInt16, dport: UInt16) -> [[UInt8]]
    {
        var ip = IPv4Spec(source: from, destination: to)
        ip.dontFragment = false
        ip.identification = id
        let datagram = PacketBuilder.ipv4(
            ip, .udp(UDPSpec(sourcePort: sport, destinationPort: dport, payload: Array(repeating: 7, count: 3000))))
        return PacketBuilder.fragmentIPv4(datagram, maxPayload: 1480)
    }

    @Test("Every fragment gets its datagram's state, in order and out of order")
    func wholeDatagramState() {
        let request = Self.fragmentedUDP(from: clientIP, to: serverIP, id: 1, sport: 5000, dport: 53)
        let reply = Self.fragmentedUDP(from: serverIP, to: clientIP, id: 2, sport: 53, dport: 5000)
        let states = Self.run(request + [reply[2], reply[0], reply[1]])
        #expect((0..<3).map { states[$0] } == ["+new+trk", "+new+trk", "+new+trk"])
        #expect((3..<6).map { states[$0] } == ["+est+rpl+trk", "+est+rpl+trk", "+est+rpl+trk"])
    }

    @Test("IPv6 fragments with extension headers are tracked whole")
    func ipv6WithExtensions() {
        // Build the whole datagram, then cut it by hand into fragments placed after the extension headers.
        var plain = IPv6Spec()
        plain.extensionHeaders = [.hopByHop([]), .destinationOptions([])]
        let whole = PacketBuilder.ipv6(
            plain, .udp(UDPSpec(sourcePort: 4000, destinationPort: 53, payload: Array(repeating: 1, count: 2000))))
        let unfragmentable = Array(whole[0..<56])  // fixed header + two 8-byte extension headers
        let payload = Array(whole[56...])
        var fragments: [[UInt8]] = []
        var offset = 0
        while offset < payload.count {
            let end = min(offset + 1232, payload.count)
            var header = unfragmentable
            header[4] = UInt8((16 + 8 + end - offset) >> 8)
            header[5] = UInt8((16 + 8 + end - offset) & 0xFF)
            header[48] = IPProtocol.ipv6Fragment  // destination options now point at the fragment header
            let field = UInt16(offset) | (end < payload.count ? 1 : 0)
            fragments.append(
                header + [IPProtocol.udp, 0, UInt8(field >> 8), UInt8(field & 0xFF), 0, 0, 0, 9] + payload[offset..<end]
            )
            offset = end
        }
        let states = Self.run(fragments)
        #expect(states.count == 2 && states.values.allSatisfy { $0 == "+new+trk" }, "\(states)")
    }

    @Test("Overlapping and too-small fragments make every fragment of the datagram invalid")
    func overlapAndTooSmall() {
        var request = Self.fragmentedUDP(from: clientIP, to: serverIP, id: 3, sport: 5000, dport: 53)
        request.insert(request[1], at: 2)  // an exact duplicate
        let states = Self.run(request)
        #expect(states.values.allSatisfy { $0 == "+inv+trk" } && states.count == 4, "\(states)")

        var ip = IPv4Spec(source: clientIP, destination: serverIP)
        ip.dontFragment = false
        let small = PacketBuilder.fragmentIPv4(
            PacketBuilder.ipv4(ip, .udp(UDPSpec(payload: Array(repeating: 1, count: 600)))), maxPayload: 200)
        let smallStates = Self.run(small)
        #expect(
            smallStates.values.allSatisfy { $0 == "+inv+trk" } && smallStates.count == small.count, "\(smallStates)")
    }

    @Test("A datagram that never completes is invalid after 15 s, not before")
    func expiry() {
        let request = Self.fragmentedUDP(from: clientIP, to: serverIP, id: 4, sport: 5000, dport: 53)
        let early = Self.run([request[0], request[1]], steps: [0, 14 * second], flushAtEnd: false)
        #expect(early.isEmpty, "held, not yet decided: \(early)")
        let late = Self.run(
            [request[0], request[1], Self.udp4Raw()], steps: [0, 1 * second, 15 * second], flushAtEnd: false)
        #expect(late[0] == "+inv+trk" && late[1] == "+inv+trk", "\(late)")
    }

    static func udp4Raw() -> [UInt8] {
        PacketBuilder.build(
            .ipv4(IPv4Spec(source: clientIP, destination: serverIP), .udp(UDPSpec(sourcePort: 9, destinationPort: 9))),
            ethernet: nil)
    }

    @Test("Batch tracking gives the same results as one packet at a time")
    func batchEquivalence() {
        var conversation = Conversation()
        var frames: [[UInt8]] = []
        frames.append(conversation.client(.syn))
        frames.append(conversation.server([.syn, .ack]))
        frames.append(conversation.client(.ack))
        for i in 0..<20 {
            frames.append(udp4(from: clientIP, to: serverIP, sport: UInt16(1000 + i % 7), dport: 53))
            frames.append(conversation.client([.ack, .psh], [UInt8(i)]))
            frames.append(conversation.server(.ack))
        }
        frames.append(PacketBuilder.build(.arp(ARPSpec())))
        let single = Harness()
        let expected = frames.map { single.track($0) }
        let batched = ConnectionTracker(
            configuration: {
                var c = ConntrackConfiguration()
                c.hashSeed = 1
                return c
            }())
        var got: [TrackResult] = []
        for chunk in stride(from: 0, to: frames.count, by: 8) {
            let slice = Array(frames[chunk..<min(chunk + 8, frames.count)])
            // Keep every frame's bytes alive while the batch runs.
            let buffers = slice.map { frame -> UnsafeMutableRawBufferPointer in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: frame.count, alignment: 8)
                frame.withUnsafeBytes { buffer.copyMemory(from: $0) }
                return buffer
            }
            defer { buffers.forEach { $0.deallocate() } }
            let packets = buffers.compactMap { try? Packet(UnsafeRawBufferPointer($0), linkType: .ethernet) }
            var results = [TrackResult](repeating: .untracked(zone: 0), count: packets.count)
            packets.withUnsafeBufferPointer { p in
                results.withUnsafeMutableBufferPointer { r in batched.track(batch: p, now: single.now, results: r) }
            }
            got += results
        }
        #expect(got.map(\.state) == expected.map(\.state))
        #expect(batched.count == single.tracker.count)
    }

    @Test("An unfinished datagram's fragments expire, and are flushed, invalid in the zone they were tracked in")
    func expiredKeepZone() throws {
        let fragments = Self.fragmentedUDP(from: clientIP, to: serverIP, id: 9, sport: 5000, dport: 53)
        let tracker = FragmentAwareTracker(tracker: ConnectionTracker())
        var results: [UInt64: TrackResult] = [:]
        let deliver: (UInt64, TrackResult) -> Void = { token, result in results[token] = result }
        let start = 1_000 * second
        // The first fragment in zone 5, the second in zone 6: two datagrams that never complete.
        for (token, zone) in [(UInt64(0), UInt16(5)), (1, 6)] {
            try fragments[Int(token)].withUnsafeBytes { raw in
                let packet = try Packet(raw, linkType: .rawIP)
                tracker.process(packet, zone: zone, now: start, token: token, deliver: deliver)
            }
        }
        #expect(results.isEmpty, "held while the datagrams may still complete")
        tracker.expire(now: start + 16 * second, deliver: deliver)
        #expect(results[0] == .invalid(.fragmentExpired, zone: 5))
        #expect(results[1] == .invalid(.fragmentExpired, zone: 6))

        results = [:]
        try fragments[0].withUnsafeBytes { raw in
            tracker.process(try Packet(raw, linkType: .rawIP), zone: 7, now: start, token: 2, deliver: deliver)
        }
        tracker.flush(deliver: deliver)
        #expect(results == [2: .invalid(.fragmentExpired, zone: 7)])
    }
}
