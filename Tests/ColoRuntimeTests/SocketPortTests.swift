import ColoCLI
import ColoPacket
import ColoRuntime
import ColoStages
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("ColoRuntime.SocketPort: QEMU chardev framing over real sockets")
struct SocketPortTests {
    @Test("frames split at every byte arrive whole and intact", arguments: [false, true])
    func splitAtEveryByte(vnet: Bool) throws {
        let path = socketPath("split")
        let (port, _) = try socketPort("socket,id=a,path=\(path),server=on,vnet_hdr_support=\(vnet ? "on" : "off")")
        let pump = PortPump([port])
        let peer = try Peer.unix(path)
        #expect(pump.until { port.isConnected })
        let header: [UInt8]? = vnet ? [UInt8](repeating: 0x5a, count: 10) : nil
        let first = ethernetFrame(1, size: 60)
        let second = ethernetFrame(2, size: 300)
        let stream = framed(first, vnetHeader: header) + framed(second, vnetHeader: header)
        let expected = [
            // The header is kept beside the frame: stages see the frame at offset 0.
            Delivered(bytes: first, vnetHeader: header ?? []), Delivered(bytes: second, vnetHeader: header ?? []),
        ]
        for cut in 1..<stream.count {
            pump.delivered = [:]
            peer.write(Array(stream[0..<cut]))
            pump.turn(timeout: 1)  // the first part alone, however much of a frame it is
            peer.write(Array(stream[cut...]))
            #expect(pump.until { pump.frames("a").count == 2 })
            #expect(pump.frames("a") == expected, "cut at byte \(cut)")
        }
        #expect(port.portCounters.errors == 0)
        #expect(port.portCounters.framesIn == UInt64(2 * (stream.count - 1)))
    }

    @Test(
        "bad framing closes only that connection, logged and counted; the server accepts again while another port works",
        arguments: [
            (false, [0, 1, 0x10, 1] as [UInt8]),  // L = 69633
            (false, [0, 0, 0, 0]),  // L = 0
            (false, [0, 0, 0, 13]),  // shorter than an Ethernet header
            (true, [0, 0, 0, 60, 0, 0, 0, 21]),  // V over 20
            (true, [0, 0, 0, 20, 0, 0, 0, 10]),  // 10 bytes of Ethernet after the vnet header
            (true, [0, 0, 0, 20, 0, 0, 0, 30]),  // V over L
        ])
    func badFraming(vnet: Bool, prefix: [UInt8]) throws {
        let badPath = socketPath("bad")
        let goodPath = socketPath("good")
        let option = vnet ? "on" : "off"
        let (bad, lines) = try socketPort("socket,id=bad,path=\(badPath),server=on,vnet_hdr_support=\(option)")
        let (good, _) = try socketPort("socket,id=good,path=\(goodPath),server=on")
        let pump = PortPump([bad, good])
        let goodPeer = try Peer.unix(goodPath)
        let badPeer = try Peer.unix(badPath)
        #expect(pump.until { bad.isConnected && good.isConnected })
        badPeer.write(prefix + [UInt8](repeating: 0, count: 80))
        goodPeer.write(framed(ethernetFrame(7)))
        #expect(pump.until { bad.portCounters.disconnects == 1 && pump.frames("good").count == 1 })
        #expect(badPeer.closedByPeer())
        #expect(bad.portCounters.errors == 1)
        #expect(bad.portCounters.framesIn == 0)
        #expect(lines.all.count == 1)
        #expect(lines.all.first?.contains("port bad:") == true)
        #expect(good.portCounters.errors == 0 && good.portCounters.disconnects == 0)

        // The server takes the next peer, with a fresh stream.
        let again = try Peer.unix(badPath)
        let frame = ethernetFrame(9)
        again.write(framed(frame, vnetHeader: vnet ? [] : nil))
        #expect(pump.until { pump.frames("bad").count == 1 })
        #expect(pump.frames("bad").first?.bytes == frame)
        #expect(bad.portCounters.connects == 2)
    }

    @Test("a TCP server serves one peer: a second connection is closed at once and counted; the first goes on")
    func serverServesOnePeer() throws {
        let (port, _) = try socketPort("socket,id=s,host=127.0.0.1,port=0,server=on")
        let listening = try #require(port.listeningPort)
        let pump = PortPump([port])
        let first = try Peer.tcp(listening)
        #expect(pump.until { port.isConnected })
        let second = try Peer.tcp(listening)
        #expect(pump.until { port.refusedConnections == 1 })
        #expect(second.closedByPeer())
        let frame = ethernetFrame(5, size: 128)
        first.write(framed(frame))
        #expect(pump.until { pump.frames("s").count == 1 })
        #expect(pump.frames("s").first?.bytes == frame)
        #expect(frame.withUnsafeBytes { port.send($0) })
        port.service(now: 0)  // output is written in bursts, on the loop turn after the frames were queued
        #expect(first.read(framed(frame).count) == framed(frame))
        #expect(port.portCounters.connects == 1 && port.portCounters.disconnects == 0)
    }

    @Test("a client with reconnect=1 over TCP reconnects after an oversize frame closed its connection")
    func clientReconnectsAfterBadFrame() throws {
        let listener = try TestListener()
        let (port, lines) = try socketPort("socket,id=c,host=127.0.0.1,port=\(listener.port),reconnect=1")
        let pump = PortPump([port])
        let first = try #require(listener.accept { pump.turn() })
        #expect(pump.until { port.isConnected })
        first.write([0, 1, 0x10, 1] + [UInt8](repeating: 0, count: 16))
        #expect(pump.until { port.portCounters.disconnects == 1 })
        #expect(port.portCounters.errors == 1)
        #expect(lines.all.count == 1 && lines.all[0].contains("69632"))
        let started = Date()
        let second = try #require(listener.accept { pump.turn() })
        #expect(Date().timeIntervalSince(started) > 0.5)  // it waited its reconnect= interval
        let frame = ethernetFrame(3, size: 200)
        second.write(framed(frame))
        #expect(pump.until { pump.frames("c").count == 1 })
        #expect(pump.frames("c").first?.bytes == frame)
        #expect(port.portCounters.connects == 2)
    }

    @Test("a server that cannot listen (address in use) throws an error naming the port and the address")
    func listenFailure() throws {
        let (first, _) = try socketPort("socket,id=first,host=127.0.0.1,port=0,server=on")
        let taken = try #require(first.listeningPort)
        // Once crashed with a double free: the failed init freed the buffers, and deinit freed them again.
        for _ in 0..<3 {
            #expect {
                _ = try socketPort("socket,id=second,host=127.0.0.1,port=\(taken),server=on")
            } throws: { error in
                let text = "\(error)"
                return text.contains("port second") && text.contains("127.0.0.1:\(taken)")
                    && text.contains("in use")
            }
        }
        #expect(first.listeningPort == taken)
    }

    @Test("a peer that reads, however slowly, loses nothing: a full queue waits for it instead of refusing frames")
    func slowReaderLosesNothing() throws {
        let path = socketPath("slow")
        let (port, _) = try socketPort("socket,id=slow,path=\(path),server=on", outputCapacity: 100_000)
        let pump = PortPump([port])
        let peer = try Peer.unix(path)
        #expect(pump.until { port.isConnected })
        let frames = (0..<2000).map { ethernetFrame(UInt8(truncatingIfNeeded: $0), size: 1400) }
        let expected = frames.flatMap { framed($0) }
        // The reader takes 16 KiB at a time with pauses: the port's 100 KB queue fills over and over.
        let received = LockedBytes()
        let reader = Thread {
            while received.count < expected.count {
                let chunk = peer.read(min(16_384, expected.count - received.count), timeout: 3)
                if chunk.isEmpty { break }
                received.append(chunk)
                usleep(200)
            }
        }
        reader.start()
        var taken = 0
        for frame in frames where frame.withUnsafeBytes({ port.send($0) }) { taken += 1 }
        port.service(now: 0)
        #expect(taken == frames.count)
        #expect(port.portCounters.sendRefused == 0)
        #expect(pump.until(timeout: 10) { received.count >= expected.count })
        let intact = received.bytes == expected  // (a Bool: a failure should not print 3 MB)
        #expect(intact, "every frame, in order")
    }

    @Test("closing the port gives queued output a moment: a reading peer gets every frame sent before the close")
    func closeDeliversQueuedOutput() throws {
        let path = socketPath("close")
        let (port, _) = try socketPort("socket,id=close,path=\(path),server=on")
        let pump = PortPump([port])
        let peer = try Peer.unix(path)
        #expect(pump.until { port.isConnected })
        let frames = (0..<600).map { ethernetFrame(UInt8(truncatingIfNeeded: $0), size: 1000) }
        let expected = frames.flatMap { framed($0) }
        let received = LockedBytes()
        let reader = Thread { received.append(peer.read(expected.count, timeout: 3)) }
        // More than the socket buffers hold: most of it is still queued in the port when it closes.
        for frame in frames { #expect(frame.withUnsafeBytes { port.send($0) }) }
        reader.start()
        port.close()
        #expect(pump.until { received.count > 0 })
        let intact = received.bytes == expected
        #expect(intact, "all 600 frames, in order, before the end of the stream")
        #expect(peer.closedByPeer())
    }

    @Test(
        "a peer that goes away while output is queued: the write failure is logged and counted, the server accepts again"
    )
    func writeFailureDropsTheConnection() throws {
        let path = socketPath("gone")
        let (port, lines) = try socketPort("socket,id=gone,path=\(path),server=on")
        let pump = PortPump([port])
        let peer = try Peer.unix(path)
        #expect(pump.until { port.isConnected })
        // The peer stops reading for good (its end stays open, so this is not an end of stream): sending fails
        // with EPIPE, and that closes the connection.
        shutdown(peer.fd, Int32(SHUT_RD))
        let frame = ethernetFrame(9, size: 1400)
        #expect(
            pump.until {
                _ = frame.withUnsafeBytes { port.send($0) }
                port.service(now: 0)
                return port.portCounters.disconnects == 1
            })
        #expect(!port.isConnected)
        #expect(port.portCounters.errors >= 1)
        #expect(lines.all.contains { $0.contains("port gone") && $0.contains("connection closed") })
        let next = try Peer.unix(path)
        #expect(pump.until { port.isConnected })
        _ = (peer, next)
    }

    @Test("a client with reconnect=0 that cannot connect stays down, counted, and refuses frames")
    func clientWithoutReconnectStaysDown() throws {
        let (port, lines) = try socketPort("socket,id=c,path=\(socketPath("nobody")),reconnect=0")
        let pump = PortPump([port])
        pump.until(timeout: 0.2) { false }
        #expect(!port.isConnected)
        #expect(port.portCounters.errors == 1)
        #expect(port.portCounters.connects == 0)
        #expect(lines.all.count == 1 && lines.all[0].contains("stays down"))
        let frame = ethernetFrame(1)
        #expect(!frame.withUnsafeBytes { port.send($0) })
        #expect(port.portCounters.sendRefused == 1)
    }

    @Test("a peer that disconnects mid-frame: logged as truncated, counted; the next stream starts clean")
    func disconnectMidFrame() throws {
        let path = socketPath("cut")
        let (port, lines) = try socketPort("socket,id=a,path=\(path),server=on")
        let pump = PortPump([port])
        do {
            let peer = try Peer.unix(path)
            #expect(pump.until { port.isConnected })
            let whole = framed(ethernetFrame(1, size: 100))
            peer.write(Array(whole[0..<50]))
            pump.until(timeout: 0.05) { false }
        }
        #expect(pump.until { port.portCounters.disconnects == 1 })
        #expect(port.portCounters.errors == 1)
        #expect(lines.all.count == 1 && lines.all[0].contains("stream ended inside a frame"))
        let peer = try Peer.unix(path)
        let frame = ethernetFrame(2, size: 100)
        peer.write(framed(frame))
        #expect(pump.until { pump.frames("a").count == 1 })
        #expect(pump.frames("a") == [Delivered(bytes: frame)])
    }

    @Test("a peer that never reads: its port refuses frames past its bound without blocking; another port goes on")
    func peerThatNeverReads() throws {
        let stuckPath = socketPath("stuck")
        let livePath = socketPath("live")
        let (stuck, _) = try socketPort("socket,id=stuck,path=\(stuckPath),server=on", outputCapacity: 100_000)
        let (live, _) = try socketPort("socket,id=live,path=\(livePath),server=on")
        let pump = PortPump([stuck, live])
        let stuckPeer = try Peer.unix(stuckPath)
        let livePeer = try Peer.unix(livePath)
        #expect(pump.until { stuck.isConnected && live.isConnected })
        let frame = ethernetFrame(4, size: 1400)
        let started = Date()
        var taken = 0
        for _ in 0..<5000 where frame.withUnsafeBytes({ stuck.send($0) }) { taken += 1 }
        #expect(Date().timeIntervalSince(started) < 1)
        #expect(stuck.portCounters.sendRefused > 0)
        #expect(stuck.portCounters.sendRefused + UInt64(taken) == 5000)
        #expect(stuck.pendingOutputBytes > 0 && stuck.pendingOutputBytes <= 100_000)
        // The other port still moves frames both ways while the stuck one's output waits.
        livePeer.write(framed(ethernetFrame(5)))
        #expect(pump.until { pump.frames("live").count == 1 })
        #expect(ethernetFrame(6).withUnsafeBytes { live.send($0) })
        live.service(now: 0)
        #expect(livePeer.read(64) == framed(ethernetFrame(6)))
        // Once the stuck peer reads, its queued frames come out intact and in order.
        let firstBytes = stuckPeer.read(framed(frame).count)
        #expect(firstBytes == framed(frame))
        _ = stuckPeer
    }

    @Test(
        "vnet_hdr_support=on: V is read and the header kept beside the frame, a given header is written on send; off: no V field"
    )
    func vnetHeader() throws {
        let onPath = socketPath("von")
        let offPath = socketPath("voff")
        let (on, _) = try socketPort("socket,id=on,path=\(onPath),server=on,vnet_hdr_support=on")
        let (off, _) = try socketPort("socket,id=off,path=\(offPath),server=on")
        let pump = PortPump([on, off])
        let onPeer = try Peer.unix(onPath)
        let offPeer = try Peer.unix(offPath)
        #expect(pump.until { on.isConnected && off.isConnected })
        let header: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        let frame = ethernetFrame(8, size: 90)
        onPeer.write(framed(frame, vnetHeader: header) + framed(frame, vnetHeader: []))
        #expect(pump.until { pump.frames("on").count == 2 })
        #expect(pump.frames("on") == [Delivered(bytes: frame, vnetHeader: header), Delivered(bytes: frame)])

        #expect(frame.withUnsafeBytes { raw in header.withUnsafeBytes { on.send(raw, vnetHeader: $0) } })
        #expect(frame.withUnsafeBytes { on.send($0) })
        let expectedOn = framed(frame, vnetHeader: header) + framed(frame, vnetHeader: [])
        on.service(now: 0)
        #expect(onPeer.read(expectedOn.count) == expectedOn)

        // Without vnet_hdr_support the stream has no V field: a frame's header is not sent.
        #expect(frame.withUnsafeBytes { raw in header.withUnsafeBytes { off.send(raw, vnetHeader: $0) } })
        #expect(frame.withUnsafeBytes { off.send($0) })
        off.service(now: 0)
        #expect(offPeer.read(2 * framed(frame).count) == framed(frame) + framed(frame))
        #expect(off.portCounters.sendRefused == 0)
    }

    @Test("colo-compare over socket ports: the primary's frame goes to the out socket once the secondary agrees")
    func coloCompareOverSockets() throws {
        let paths = ["pin", "sin", "out"].map { ($0, socketPath($0)) }
        let specs = try paths.map { try PortSpec.parse("socket,id=\($0.0),path=\($0.1),server=on") }
        let ports = try specs.map { spec -> any FramePort in
            guard case .socket(let socket) = spec else { throw TestSocketError("not a socket spec") }
            return try ColoRuntime.SocketPort(spec: socket)
        }
        let proxy = try GraphProxy(
            ports: ports, portSpecs: specs,
            objects: [try ObjectSpec.parse("colo-compare,id=cmp,primary_in=pin,secondary_in=sin,outdev=out")])
        let thread = Thread { proxy.run() }
        thread.start()
        defer { proxy.stop() }
        let out = try Peer.unix(paths[2].1)
        let primary = try Peer.unix(paths[0].1)
        let secondary = try Peer.unix(paths[1].1)
        usleep(200_000)  // the data thread accepts all three
        let reply = udp("answer")
        primary.write(framed(reply))
        #expect(out.read(1, timeout: 0.3).isEmpty)  // held until the secondary's copy arrives
        secondary.write(framed(reply))
        #expect(out.read(framed(reply).count) == framed(reply))
        let second = udp("second answer", port: 54)
        secondary.write(framed(second))
        primary.write(framed(second))
        #expect(out.read(framed(second).count) == framed(second))
    }
}

@Suite("GraphProxy over socket ports: virtio-net headers")
struct GraphSocketVnetTests {
    @Test(
        "a frame's vnet header goes on with it and with its mirror copy to vnet_hdr_support ports; a port without V gets the frame alone"
    )
    func headerFollowsFrame() throws {
        let paths = ["in", "copy", "plain"].map { socketPath("gv-\($0)") }
        let texts = [
            "socket,id=in,path=\(paths[0]),server=on,vnet_hdr_support=on",
            "socket,id=copy,path=\(paths[1]),server=on,vnet_hdr_support=on",
            "socket,id=plain,path=\(paths[2]),server=on",
        ]
        let specs = try texts.map { try PortSpec.parse($0) }
        let ports = try texts.map { try socketPort($0).0 }
        let proxy = try GraphProxy(
            ports: ports, portSpecs: specs,
            objects: try [
                "filter-mirror,id=m,netdev=in,queue=tx,outdev=copy",
                "filter-redirector,id=r,netdev=in,queue=tx,outdev=plain",
            ].map { try ObjectSpec.parse($0) })
        let thread = Thread { proxy.run() }
        thread.start()
        defer {
            proxy.stop()
            while !thread.isFinished { usleep(1000) }
            for port in ports { port.close() }
        }
        let peers = try paths.map { try Peer.unix($0) }
        let header: [UInt8] = [0x01, 0, 0x22, 0, 0, 0, 0x33, 0, 0x44, 0, 0x55, 0]
        let withHeader = ethernetFrame(3, size: 120)
        let without = ethernetFrame(4, size: 80)
        // The ports accept on the proxy's thread: wait until a first frame comes through.
        usleep(200_000)
        peers[0].write(framed(withHeader, vnetHeader: header) + framed(without, vnetHeader: []))
        let copied = framed(withHeader, vnetHeader: header) + framed(without, vnetHeader: [])
        #expect(peers[1].read(copied.count) == copied, "the copy keeps the header, and V = 0 for the frame without")
        let plain = framed(withHeader) + framed(without)
        #expect(peers[2].read(plain.count) == plain, "no V field on this port: the frames alone")
    }
}
