import ColoConntrack
import ColoPacket
import ColoPacketBuilder
import Testing

@Suite("UDP, ICMP, other protocols, related errors")
struct ProtocolTrackingTests {
    @Test("UDP: first packet new, reply est+rpl, later est; 30 s unreplied, 120 s replied")
    func udp() {
        let h = Harness()
        let request = udp4(from: clientIP, to: serverIP, sport: 5000, dport: 53)
        let reply = udp4(from: serverIP, to: clientIP, sport: 53, dport: 5000)
        #expect(h.state(request) == "+new+trk")
        #expect(h.state(request) == "+new+trk")
        #expect(((h.entries().first?.expiresAt ?? 0) - h.now) / second == 30)
        #expect(h.state(reply) == "+est+rpl+trk")
        #expect(h.state(request) == "+est+trk")
        #expect(((h.entries().first?.expiresAt ?? 0) - h.now) / second == 120)
        #expect(h.entries().first?.status.contains(.assured) == true)
    }

    @Test("UDP entry expires at 30 s without a reply, not before")
    func udpExpiry() {
        let h = Harness()
        _ = h.state(udp4(from: clientIP, to: serverIP, sport: 5000, dport: 53))
        h.advance(seconds: 29)
        #expect(h.tracker.expire(now: h.now) == 0)
        h.advance(seconds: 1)
        #expect(h.tracker.expire(now: h.now) == 1)
        // Lazy expiry on lookup: an expired entry found by a packet is replaced.
        _ = h.state(udp4(from: clientIP, to: serverIP, sport: 5001, dport: 53))
        h.advance(seconds: 31)
        #expect(h.state(udp4(from: serverIP, to: clientIP, sport: 53, dport: 5001)) == "+new+trk")
        #expect(h.tracker.counters.expired == 2)
    }

    @Test("ICMP echo keyed by id; a reply without a request is invalid")
    func icmpEcho() {
        let h = Harness()
        let request = PacketBuilder.build(
            .ipv4(IPv4Spec(source: clientIP, destination: serverIP), .icmp(.echo(identifier: 77, sequence: 1))))
        let reply = PacketBuilder.build(
            .ipv4(IPv4Spec(source: serverIP, destination: clientIP), .icmp(.echo(type: 0, identifier: 77, sequence: 1)))
        )
        let otherID = PacketBuilder.build(
            .ipv4(IPv4Spec(source: serverIP, destination: clientIP), .icmp(.echo(type: 0, identifier: 78, sequence: 1)))
        )
        #expect(h.state(request) == "+new+trk")
        #expect(h.state(reply) == "+est+rpl+trk")
        #expect(h.state(request) == "+est+trk")
        #expect(h.state(otherID) == "+inv+trk")
        #expect(((h.entries().first?.expiresAt ?? 0) - h.now) / second == 30)
        #expect(h.entries().count == 1)
    }

    @Test("ICMP timestamp and information requests start connections; other ICMP types do not")
    func icmpQueries() {
        let h = Harness()
        for (request, reply) in [(UInt8(13), UInt8(14)), (15, 16)] {
            let q = PacketBuilder.build(
                .ipv4(
                    IPv4Spec(source: clientIP, destination: serverIP),
                    .icmp(ICMPSpec(type: request, restOfHeader: 5 << 16, body: Array(repeating: 0, count: 12)))))
            let r = PacketBuilder.build(
                .ipv4(
                    IPv4Spec(source: serverIP, destination: clientIP),
                    .icmp(ICMPSpec(type: reply, restOfHeader: 5 << 16, body: Array(repeating: 0, count: 12)))))
            #expect(h.state(q) == "+new+trk", "type \(request)")
            #expect(h.state(r) == "+est+rpl+trk", "type \(reply)")
        }
        let routerAdvert = PacketBuilder.build(.ipv4(IPv4Spec(), .icmp(ICMPSpec(type: 9, body: [0, 0, 0, 0]))))
        #expect(h.state(routerAdvert) == "+inv+trk")
    }

    @Test("ICMPv6 echo; neighbour discovery is not a connection")
    func icmpv6() {
        let h = Harness()
        let c6 = IPv6Address("fd00:c010::1")!
        let s6 = IPv6Address("fd00:c010::2")!
        let request = PacketBuilder.build(
            .ipv6(IPv6Spec(source: c6, destination: s6), .icmp(.echo(type: 128, identifier: 9, sequence: 1))))
        let reply = PacketBuilder.build(
            .ipv6(IPv6Spec(source: s6, destination: c6), .icmp(.echo(type: 129, identifier: 9, sequence: 1))))
        #expect(h.state(request) == "+new+trk")
        #expect(h.state(reply) == "+est+rpl+trk")
        let ns = PacketBuilder.build(
            .ipv6(IPv6Spec(source: c6, destination: s6), .icmp(.neighborSolicitation(target: s6, sourceMAC: nil))))
        #expect(h.state(ns) == "+inv+trk")
    }

    @Test("Other IP protocols: first new, reply est+rpl, 600 s")
    func otherProtocol() {
        let h = Harness()
        let gre = PacketBuilder.build(
            .ipv4(IPv4Spec(source: clientIP, destination: serverIP), .raw(protocolNumber: 47, bytes: [0, 0, 8, 0])))
        let back = PacketBuilder.build(
            .ipv4(IPv4Spec(source: serverIP, destination: clientIP), .raw(protocolNumber: 47, bytes: [0, 0, 8, 0])))
        #expect(h.state(gre) == "+new+trk")
        #expect(h.state(back) == "+est+rpl+trk")
        #expect(((h.entries().first?.expiresAt ?? 0) - h.now) / second == 600)
    }

    @Test("Non-IP frames are not tracked")
    func arp() {
        let h = Harness()
        #expect(h.state(PacketBuilder.build(.arp(ARPSpec()))) == "-trk")
        #expect(h.tracker.counters.packets == 0)
    }

    static let v4ErrorTypes: [(UInt8, UInt8)] = [(3, 3), (4, 0), (5, 1), (11, 0), (12, 0)]
    static let v6ErrorTypes: [(UInt8, UInt8)] = [(1, 4), (2, 0), (3, 0), (4, 0)]

    @Test("ICMPv4 errors naming a tracked connection are related", arguments: v4ErrorTypes)
    func relatedV4(type: UInt8, code: UInt8) {
        let h = Harness()
        let probe = udp4(from: clientIP, to: serverIP, sport: 33000, dport: 9)
        #expect(h.state(probe) == "+new+trk")
        let quoted = Array(probe.dropFirst(14))
        // From the server back to the client: reply direction.
        let fromServer = PacketBuilder.build(
            .ipv4(
                IPv4Spec(source: serverIP, destination: clientIP),
                .icmp(.error(type: type, code: code, quoting: quoted, quoteLength: 28))))
        #expect(h.state(fromServer) == "+rel+rpl+trk", "type \(type)")
        // From a router on the path: still related, still toward the client.
        let fromRouter = PacketBuilder.build(
            .ipv4(
                IPv4Spec(source: routerIP, destination: clientIP),
                .icmp(.error(type: type, code: code, quoting: quoted, quoteLength: 28))))
        #expect(h.state(fromRouter) == "+rel+rpl+trk")
        #expect(h.entries().count == 1, "a related packet never creates an entry")
    }

    @Test("ICMPv6 errors naming a tracked connection are related", arguments: v6ErrorTypes)
    func relatedV6(type: UInt8, code: UInt8) {
        let h = Harness()
        let c6 = IPv6Address("fd00:c010::1")!
        let s6 = IPv6Address("fd00:c010::2")!
        var conversation = Conversation(v6: true)
        let syn = conversation.client(.syn)
        #expect(h.state(syn) == "+new+trk")
        let error = PacketBuilder.build(
            .ipv6(
                IPv6Spec(source: s6, destination: c6),
                .icmp(.error(type: type, code: code, quoting: Array(syn.dropFirst(14))))))
        #expect(h.state(error) == "+rel+rpl+trk", "type \(type)")
    }

    @Test("Related in the original direction: an error about a reply packet")
    func relatedOriginal() {
        let h = Harness()
        _ = h.state(udp4(from: clientIP, to: serverIP, sport: 5000, dport: 53))
        let reply = udp4(from: serverIP, to: clientIP, sport: 53, dport: 5000)
        _ = h.state(reply)
        let error = PacketBuilder.build(
            .ipv4(
                IPv4Spec(source: clientIP, destination: serverIP),
                .icmp(.error(type: 3, code: 3, quoting: Array(reply.dropFirst(14))))))
        #expect(h.state(error) == "+rel+trk")
    }

    @Test("ICMP errors that name no connection, or whose quote was not sent to the error's destination, are invalid")
    func unrelatedErrors() {
        let h = Harness()
        let probe = udp4(from: clientIP, to: serverIP, sport: 33000, dport: 9)
        let quoted = Array(probe.dropFirst(14))
        let miss = PacketBuilder.build(
            .ipv4(IPv4Spec(source: serverIP, destination: clientIP), .icmp(.error(type: 3, code: 3, quoting: quoted))))
        #expect(h.track(miss).invalidReason == .unrelatedICMPError)
        _ = h.state(probe)
        let wrongDestination = PacketBuilder.build(
            .ipv4(IPv4Spec(source: serverIP, destination: routerIP), .icmp(.error(type: 3, code: 3, quoting: quoted))))
        #expect(h.track(wrongDestination).invalidReason == .unrelatedICMPError)
        let tooShort = PacketBuilder.build(
            .ipv4(
                IPv4Spec(source: serverIP, destination: clientIP),
                .icmp(.error(type: 3, code: 3, quoting: quoted, quoteLength: 24))))
        #expect(h.track(tooShort).invalidReason == .malformed)
    }

    @Test("Zones keep identical tuples apart")
    func zones() {
        let h = Harness()
        var primary = Conversation()
        var secondary = Conversation()
        secondary.serverISN = 12345
        secondary.serverNext = 12345
        #expect(h.state(primary.client(.syn), zone: 1) == "+new+trk")
        #expect(h.state(secondary.client(.syn), zone: 2) == "+new+trk")
        #expect(h.state(primary.server([.syn, .ack]), zone: 1) == "+est+rpl+trk")
        #expect(h.state(secondary.server([.syn, .ack]), zone: 2) == "+est+rpl+trk")
        #expect(h.entries().count == 2)
        #expect(h.tracker.count(zone: 1) == 1 && h.tracker.count(zone: 2) == 1)
        #expect(h.state(primary.server([.syn, .ack]), zone: 3) == "+inv+trk", "zone 3 has no such connection")
    }

    @Test("Without commit nothing is stored")
    func noCommit() {
        let h = Harness()
        #expect(h.state(udp4(from: clientIP, to: serverIP, sport: 1, dport: 2), commit: false) == "+new+trk")
        #expect(h.entries().isEmpty)
    }

    @Test("Global and per-zone limits refuse commits and count them")
    func limits() {
        let h = Harness {
            $0.maxConnections = 3
            $0.zoneLimits = [7: 1]
        }
        for port in 1...5 {
            #expect(h.state(udp4(from: clientIP, to: serverIP, sport: UInt16(port), dport: 53)) == "+new+trk")
        }
        #expect(h.tracker.count == 3)
        #expect(h.tracker.counters.refusedGlobalLimit == 2)
        let z = Harness { $0.zoneLimits = [7: 1] }
        _ = z.state(udp4(from: clientIP, to: serverIP, sport: 1, dport: 53), zone: 7)
        _ = z.state(udp4(from: clientIP, to: serverIP, sport: 2, dport: 53), zone: 7)
        _ = z.state(udp4(from: clientIP, to: serverIP, sport: 2, dport: 53), zone: 8)
        #expect(z.tracker.count(zone: 7) == 1 && z.tracker.count(zone: 8) == 1)
        #expect(z.tracker.counters.refusedZoneLimit == 1)
    }

    @Test("A SYN flood from random sources stays within the limit: memory flat, counters rising")
    func synFlood() {
        let h = Harness { $0.maxConnections = 4096 }
        var generator = SystemRandomNumberGenerator()
        var footprints: [Int] = []
        for round in 0..<5 {
            for _ in 0..<10_000 {
                let source = IPv4Address(value: UInt32.random(in: 0...UInt32.max, using: &generator))
                let frame = PacketBuilder.tcp4(
                    TCPSpec(
                        sourcePort: UInt16.random(in: 1...65535, using: &generator), destinationPort: 80,
                        sequenceNumber: UInt32.random(in: 0...UInt32.max, using: &generator), flags: .syn),
                    ip: IPv4Spec(source: source, destination: serverIP))
                _ = h.track(frame)
            }
            footprints.append(h.tracker.memoryFootprint)
            #expect(h.tracker.count <= 4096, "round \(round)")
        }
        #expect(Set(footprints).count == 1, "table memory must stop growing at the limit: \(footprints)")
        #expect(h.tracker.counters.refusedGlobalLimit >= 50_000 - 4096)
        // Expiry frees the table again.
        h.advance(seconds: 121)
        var destroyed = 0
        for _ in 0..<10 { destroyed += h.tracker.expire(now: h.now, budget: 1024) }
        #expect(destroyed == 4096 && h.tracker.count == 0)
    }

    @Test("conntrack -L and -E lines")
    func listing() {
        let h = Harness()
        var c = Conversation()
        _ = c.handshake(h)
        let line = ConntrackFormatter.line(h.entries()[0], now: h.now)
        #expect(
            line
                == "tcp      6 432000 ESTABLISHED src=10.10.0.1 dst=10.10.0.2 sport=40000 dport=80 src=10.10.0.2 dst=10.10.0.1 sport=80 dport=40000 [ASSURED] zone=0 use=1"
        )
        #expect(
            h.events.first
                == "    [NEW] tcp      6 120 SYN_SENT src=10.10.0.1 dst=10.10.0.2 sport=40000 dport=80 [UNREPLIED] src=10.10.0.2 dst=10.10.0.1 sport=80 dport=40000 zone=0 use=1"
        )
        #expect(h.events.contains { $0.hasPrefix(" [UPDATE] tcp      6 60 SYN_RECV") })
        let u = Harness()
        _ = u.state(
            PacketBuilder.build(
                .ipv4(IPv4Spec(source: clientIP, destination: serverIP), .icmp(.echo(identifier: 5, sequence: 1)))))
        #expect(
            ConntrackFormatter.line(u.entries()[0], now: u.now)
                == "icmp     1 30 src=10.10.0.1 dst=10.10.0.2 type=8 code=0 id=5 [UNREPLIED] src=10.10.0.2 dst=10.10.0.1 type=0 code=0 id=5 zone=0 use=1"
        )
        _ = u.tracker.flush(now: u.now)
        #expect(u.events.last?.hasPrefix("[DESTROY] icmp") == true)
    }

    @Test("Stale handles are refused after the entry is freed and reused")
    func staleHandles() {
        let h = Harness()
        let first = h.track(udp4(from: clientIP, to: serverIP, sport: 1, dport: 2))
        #expect(h.tracker.entry(first.handle) != nil)
        h.tracker.flush(now: h.now)
        let second = h.track(udp4(from: clientIP, to: serverIP, sport: 3, dport: 4))
        #expect(second.handle.index == first.handle.index, "the freed slot is reused")
        #expect(h.tracker.entry(first.handle) == nil)
        let slot = h.tracker.claimExtension(name: "rewriter")!
        h.tracker.withEntry(second.handle) { $0.extensions[slot] = 42 }
        #expect(h.tracker.entry(second.handle)?.extensions[slot] == 42)
    }
}
