import ColoConntrack
import ColoPacket
import ColoPacketBuilder
import Testing

@Suite("TCP tracking")
struct TCPTrackingTests {
    @Test("Handshake, data, FIN teardown: new, est+rpl, est; states through TIME_WAIT")
    func fullConnection() throws {
        let h = Harness()
        var c = Conversation()
        #expect(c.handshake(h) == ["+new+trk", "+est+rpl+trk", "+est+trk"])
        #expect(h.entries().first?.tcpState == .established)
        #expect(h.entries().first?.status.contains(.assured) == true)
        #expect(h.state(c.client([.ack, .psh], Array("GET /".utf8))) == "+est+trk")
        #expect(h.state(c.server([.ack, .psh], Array(repeating: 0x61, count: 1448))) == "+est+rpl+trk")
        #expect(h.state(c.client(.ack)) == "+est+trk")
        #expect(h.state(c.server([.fin, .ack])) == "+est+rpl+trk")
        #expect(h.entries().first?.tcpState == .finWait)
        #expect(h.state(c.client(.ack)) == "+est+trk")
        #expect(h.entries().first?.tcpState == .closeWait)
        #expect(h.state(c.client([.fin, .ack])) == "+est+trk")
        #expect(h.entries().first?.tcpState == .lastAck)
        #expect(h.state(c.server(.ack)) == "+est+rpl+trk")
        #expect(h.entries().first?.tcpState == .timeWait)
        #expect(h.tracker.counters.invalid == 0)
    }

    @Test("IPv6 handshake and data")
    func ipv6() {
        let h = Harness()
        var c = Conversation(v6: true)
        #expect(c.handshake(h) == ["+new+trk", "+est+rpl+trk", "+est+trk"])
        #expect(h.state(c.server([.ack, .psh], [1, 2, 3])) == "+est+rpl+trk")
        #expect(h.entries().first?.key.family == 6)
    }

    @Test("SYN retransmissions stay new until the first reply")
    func synRetransmission() {
        let h = Harness()
        var c = Conversation()
        let syn = c.client(.syn)
        #expect(h.state(syn) == "+new+trk")
        #expect(h.state(syn) == "+new+trk")
        #expect(h.entries().count == 1)
        #expect(h.state(c.server([.syn, .ack])) == "+est+rpl+trk")
        #expect(h.state(syn) == "+est+trk", "a late SYN on a replied connection is ignored, not invalid")
    }

    @Test("Simultaneous open goes through SYN_SENT2")
    func simultaneousOpen() {
        let h = Harness()
        var c = Conversation()
        #expect(h.state(c.client(.syn)) == "+new+trk")
        #expect(h.state(c.server(.syn)) == "+est+rpl+trk")
        #expect(h.entries().first?.tcpState == .synSent2)
        #expect(h.state(c.server([.syn, .ack])) == "+est+rpl+trk")
        #expect(h.entries().first?.tcpState == .synReceived)
        #expect(h.state(c.client(.ack)) == "+est+trk")
        #expect(h.entries().first?.tcpState == .established)
    }

    @Test(
        "Invalid flag combinations",
        arguments: [
            TCPFlags([.syn, .fin]), [.syn, .rst], [], [.fin], [.psh], [.urg], [.syn, .fin, .ack],
        ])
    func invalidFlags(flags: TCPFlags) {
        let h = Harness()
        let frame = PacketBuilder.tcp4(TCPSpec(flags: flags))
        let result = h.track(frame)
        #expect(result.state == [.invalid, .tracked], "flags \(flags) must be invalid")
        #expect(result.invalidReason == .badFlags)
        #expect(h.entries().isEmpty)
    }

    @Test("Segments that cannot start a connection: SYN|ACK, FIN|ACK, RST with no entry")
    func cannotStart() {
        for flags: TCPFlags in [[.syn, .ack], [.fin, .ack], [.rst], [.rst, .ack]] {
            let h = Harness()
            #expect(
                h.state(PacketBuilder.tcp4(TCPSpec(flags: flags))) == "+inv+trk", "\(flags) must not start a connection"
            )
            #expect(h.entries().isEmpty)
        }
    }

    @Test("Out-of-window sequence and ack are invalid; old retransmissions are accepted without state change")
    func windowChecks() {
        let h = Harness()
        var c = Conversation()
        _ = c.handshake(h)
        _ = h.state(c.client([.ack, .psh], Array(repeating: 1, count: 100)))
        _ = h.state(c.server(.ack))
        // Sequence far beyond what the server allowed.
        var far = c
        far.clientNext &+= 50_000_000
        #expect(h.track(far.client([.ack, .psh], [1])).invalidReason == .outOfWindow)
        // Ack for data the server never sent.
        var bogusAck = c
        bogusAck.serverNext &+= 10_000_000
        #expect(h.track(bogusAck.client(.ack)).invalidReason == .outOfWindow)
        // A retransmission of the first 100 bytes, long after: below the window, ignored but accepted.
        var old = c
        old.clientNext = c.clientISN &+ 1
        let before = h.entries().first?.original
        #expect(h.state(old.client([.ack, .psh], Array(repeating: 1, count: 100))) == "+est+trk")
        #expect(h.entries().first?.original == before)
        #expect(h.tracker.counters.invalidByReason[Int(InvalidReason.outOfWindow.rawValue)] == 2)
    }

    @Test("Window scaling from SYN options widens the acceptable window")
    func windowScaling() {
        let h = Harness()
        var c = Conversation()
        c.window = 1000
        _ = c.handshake(h)  // both sides scale 7: windows of 1000 << 7 = 128000 bytes
        // The SYN|ACK's window is never scaled; the server's next ACK advertises 128000.
        _ = h.state(c.server(.ack))
        var ahead = c
        ahead.clientNext &+= 100_000  // inside 128000, outside an unscaled 1000
        #expect(h.state(ahead.client([.ack, .psh], [1])) == "+est+trk")
        let h2 = Harness()
        var unscaled = Conversation()
        unscaled.window = 1000
        _ = h2.state(unscaled.client(.syn, options: [.windowScale(7)]))
        _ = h2.state(unscaled.server([.syn, .ack]))  // no option: scaling off for both
        _ = h2.state(unscaled.client(.ack))
        _ = h2.state(unscaled.server(.ack))
        var ahead2 = unscaled
        ahead2.clientNext &+= 100_000
        #expect(h2.state(ahead2.client([.ack, .psh], [1])) == "+inv+trk")
    }

    @Test("Liberal mode skips window checks")
    func liberal() {
        let h = Harness { $0.tcpLiberal = true }
        var c = Conversation()
        _ = c.handshake(h)
        c.clientNext &+= 50_000_000
        #expect(h.state(c.client([.ack, .psh], [1])) == "+est+trk")
    }

    @Test("Port reuse: a SYN on a TIME_WAIT connection starts a new one")
    func portReuse() {
        let h = Harness()
        var c = Conversation()
        _ = c.handshake(h)
        _ = h.state(c.client([.fin, .ack]))
        _ = h.state(c.server([.fin, .ack]))
        _ = h.state(c.client(.ack))
        #expect(h.entries().first?.tcpState == .timeWait)
        var next = Conversation()
        next.clientISN = c.clientNext &+ 100_000
        next.clientNext = next.clientISN
        #expect(h.state(next.client(.syn)) == "+new+trk")
        #expect(h.entries().count == 1 && h.entries().first?.tcpState == .synSent)
        #expect(h.tracker.counters.reopened == 1)
        #expect(h.events.contains { $0.contains("[DESTROY]") })
    }

    @Test("Mid-stream pickup on by default, refused when off")
    func midStream() {
        let h = Harness()
        var c = Conversation()
        c.clientNext = 5000
        c.serverNext = 9000
        #expect(h.state(c.client([.ack, .psh], [1, 2, 3])) == "+new+trk")
        #expect(h.state(c.server(.ack)) == "+est+rpl+trk")
        #expect(h.state(c.client([.ack, .psh], [4])) == "+est+trk")
        let off = Harness { $0.tcpMidStreamPickup = false }
        #expect(off.track(c.client(.ack)).invalidReason == .cannotStart)
    }

    @Test("RST closes; a stale RST below the peer's ack is invalid")
    func resets() {
        let h = Harness()
        var c = Conversation()
        _ = c.handshake(h)
        _ = h.state(c.client([.ack, .psh], Array(repeating: 1, count: 10)))
        _ = h.state(c.server(.ack))
        var stale = c
        stale.clientNext = c.clientISN &+ 1  // the server already acked past this
        #expect(h.track(stale.client(.rst)).invalidReason == .invalidRST)
        #expect(h.state(c.client([.rst, .ack])) == "+est+trk")
        #expect(h.entries().first?.tcpState == .close)
        // RST answering a SYN to a closed port.
        let h2 = Harness()
        var closed = Conversation()
        #expect(h2.state(closed.client(.syn)) == "+new+trk")
        #expect(h2.state(closed.server([.rst, .ack])) == "+est+rpl+trk")
        #expect(h2.entries().first?.tcpState == .close)
    }

    @Test("Bad checksum and port 0 are invalid")
    func checksumAndPortZero() {
        let h = Harness()
        var bad = TCPSpec(flags: .syn)
        bad.corruptChecksum = true
        #expect(h.track(PacketBuilder.tcp4(bad)).invalidReason == .badChecksum)
        #expect(h.track(PacketBuilder.tcp4(TCPSpec(sourcePort: 0, flags: .syn))).invalidReason == .portZero)
        let unchecked = Harness { $0.checksumValidation = false }
        #expect(unchecked.state(PacketBuilder.tcp4(bad)) == "+new+trk")
    }

    @Test("Timeouts per TCP state, with an injected clock")
    func timeouts() {
        func expiresIn(_ h: Harness) -> UInt64 {
            ((h.entries().first?.expiresAt ?? 0) - h.now) / second
        }
        let h = Harness()
        var c = Conversation()
        _ = h.state(c.client(.syn))
        #expect(expiresIn(h) == 120, "SYN_SENT")
        _ = h.state(c.server([.syn, .ack]))
        #expect(expiresIn(h) == 60, "SYN_RECV")
        _ = h.state(c.client(.ack))
        #expect(expiresIn(h) == 432_000, "ESTABLISHED")
        _ = h.state(c.client([.ack, .psh], [1]))
        #expect(expiresIn(h) == 300, "unacknowledged data")
        _ = h.state(c.server(.ack))
        #expect(expiresIn(h) == 432_000, "all data acknowledged")
        _ = h.state(c.client([.fin, .ack]))
        #expect(expiresIn(h) == 120, "FIN_WAIT")
        _ = h.state(c.server(.ack))
        #expect(expiresIn(h) == 60, "CLOSE_WAIT")
        _ = h.state(c.server([.fin, .ack]))
        #expect(expiresIn(h) == 30, "LAST_ACK")
        _ = h.state(c.client(.ack))
        #expect(expiresIn(h) == 120, "TIME_WAIT")
        // The entry goes at 120 s, not before.
        h.advance(seconds: 119)
        #expect(h.tracker.expire(now: h.now) == 0)
        h.advance(seconds: 1)
        #expect(h.tracker.expire(now: h.now) == 1)
        #expect(h.entries().isEmpty)
        // CLOSE after RST: 10 s.
        let h2 = Harness()
        var r = Conversation()
        _ = r.handshake(h2)
        _ = h2.state(r.client(.rst))
        #expect(expiresIn(h2) == 10, "CLOSE")
    }
}
