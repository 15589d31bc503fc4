import ColoRuntime
import ColoStages
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// QEMU 7.2's filter-mirror (the Debian package) sends to a colo-proxy `socket` port (WIRE.md §1).
///
/// QEMU runs with `-machine none`: two `-netdev socket,udp=` backends joined by a hub. Every Ethernet frame the test
/// sends as a UDP datagram to the first netdev's local address is mirrored, framed, to QEMU's chardev server, to
/// which the port under test connects as a client with `reconnect=1`.
@Suite("MirrorInterop: QEMU filter-mirror into a socket port", .serialized)
struct MirrorInteropTests {
    @Test("frames QEMU's filter-mirror sends arrive intact, in order", arguments: [false, true])
    func mirroredFramesArriveIntact(vnet: Bool) throws {
        let qemu = try MirrorInteropQEMU(vnetHeaderSupport: vnet)
        defer { qemu.stop() }
        let option = vnet ? "on" : "off"
        guard
            case .socket(let spec) = try PortSpec.parse(
                "socket,id=m,host=127.0.0.1,port=\(qemu.chardevPort),reconnect=1,vnet_hdr_support=\(option)")
        else { throw MirrorInteropError("not a socket spec") }
        let port = try ColoRuntime.SocketPort(spec: spec)
        let lines = MirrorInteropLines()
        port.log = { lines.all.append($0) }  // the first attempts may come before QEMU listens
        let pump = MirrorInteropPump(port)
        #expect(pump.until(timeout: 10) { port.isConnected }, "QEMU's chardev server never accepted")

        // QEMU accepts on its own loop: repeat a first frame until it comes through, then send the real ones.
        let probe = mirrorInteropFrame(0, size: 60)
        #expect(
            pump.until(timeout: 5) {
                qemu.inject(probe)
                return pump.until(timeout: 0.1) { !pump.frames.isEmpty }
            }, "no mirrored frame from QEMU")
        pump.until(timeout: 0.3) { false }
        pump.frames.removeAll()

        let frames = [60, 64, 1514, 4000, 9014].enumerated().map {
            mirrorInteropFrame(UInt8($0.offset + 1), size: $0.element)
        }
        for frame in frames { qemu.inject(frame) }
        #expect(pump.until(timeout: 5) { pump.frames.count >= frames.count })
        #expect(pump.frames.count == frames.count)
        for (index, frame) in frames.enumerated() where index < pump.frames.count {
            #expect(pump.frames[index].bytes == frame, "frame \(index) (\(frame.count) bytes) differs")
        }
        // QEMU's socket netdev has no vnet header: with the V field on, V is 0.
        #expect(pump.frames.allSatisfy { $0.vnetHeaderLength == 0 })
        #expect(port.portCounters.disconnects == 0, "\(lines.all)")
    }
}
