import ColoRuntime
import ColoStages
import ColoTestSupport
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

struct MirrorInteropError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// An Ethernet frame of `size` bytes whose bytes say which frame it is.
func mirrorInteropFrame(_ tag: UInt8, size: Int) -> [UInt8] {
    var frame = [UInt8](repeating: 0, count: size)
    for index in 0..<size { frame[index] = UInt8(truncatingIfNeeded: index &* 13 &+ Int(tag)) }
    // A unicast destination and a local source, IPv4 EtherType.
    frame[0] = 0x52
    frame[6] = 0x52
    frame[12] = 0x08
    frame[13] = 0x00
    return frame
}

/// A free loopback port of `type` (bound, read, released: another program may take it first, rarely).
func mirrorInteropFreePort(_ type: Int32) -> UInt16 {
    let fd = socket(AF_INET, type, 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    return UInt16(bigEndian: address.sin_port)
}

/// A QEMU without a machine whose filter-mirror copies frames from a UDP socket netdev to a chardev server.
final class MirrorInteropQEMU {
    let chardevPort: UInt16
    let netdevLocalPort: UInt16
    private var pid: pid_t = 0
    private let udp: Int32
    private let sink: Int32

    init(vnetHeaderSupport: Bool) throws {
        chardevPort = mirrorInteropFreePort(Int32(SOCK_STREAM.rawValue))
        netdevLocalPort = mirrorInteropFreePort(Int32(SOCK_DGRAM.rawValue))
        let remotePort = mirrorInteropFreePort(Int32(SOCK_DGRAM.rawValue))
        // Two UDP socket netdevs joined by a hub, no machine and no NIC: frames arriving on `a` leave through `b`
        // (toward `sink`, so the hub always has a taker), and filter-mirror copies them to the chardev. A NIC of a
        // paused machine would take one frame and then stall the netdev.
        sink = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var sinkAddress = sockaddr_in()
        sinkAddress.sin_family = sa_family_t(AF_INET)
        sinkAddress.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var sinkLength = socklen_t(MemoryLayout<sockaddr_in>.size)
        let sinkSocket = sink
        _ = withUnsafeMutablePointer(to: &sinkAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(sinkSocket, $0, sinkLength) == 0 && getsockname(sinkSocket, $0, &sinkLength) == 0
            }
        }
        let sinkPort = UInt16(bigEndian: sinkAddress.sin_port)
        let outPort = mirrorInteropFreePort(Int32(SOCK_DGRAM.rawValue))
        let arguments = [
            "/usr/bin/qemu-system-x86_64",
            "-machine", "none", "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none",
            "-netdev", "socket,id=a,udp=127.0.0.1:\(remotePort),localaddr=127.0.0.1:\(netdevLocalPort)",
            "-netdev", "socket,id=b,udp=127.0.0.1:\(sinkPort),localaddr=127.0.0.1:\(outPort)",
            "-netdev", "hubport,id=ha,hubid=0,netdev=a", "-netdev", "hubport,id=hb,hubid=0,netdev=b",
            "-chardev", "socket,id=m0,host=127.0.0.1,port=\(chardevPort),server=on,wait=off",
            "-object",
            "filter-mirror,id=f0,netdev=a,queue=tx,outdev=m0,vnet_hdr_support=\(vnetHeaderSupport ? "on" : "off")",
        ]
        udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        // LabShell.start spawns with a clean signal state: the test process blocks signals that QEMU's main loop
        // needs, and a child inherits the mask (Foundation's Process keeps it).
        do {
            pid = try LabShell.start(arguments)
        } catch {
            close(udp)
            close(sink)
            throw MirrorInteropError("cannot start qemu-system-x86_64 (install qemu-system-x86): \(error)")
        }
    }

    /// Sends one Ethernet frame to the netdev, as its UDP peer would.
    func inject(_ frame: [UInt8]) {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = netdevLocalPort.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        _ = frame.withUnsafeBytes { bytes in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(udp, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    func stop() {
        guard pid > 0 else { return }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0)
        pid = 0
        close(udp)
        close(sink)
    }
}

struct MirrorInteropFrame {
    let bytes: [UInt8]
    let vnetHeaderLength: Int
}

/// Drives one socket port on the test's thread as the data thread would.
final class MirrorInteropPump {
    let port: ColoRuntime.SocketPort
    let store = PacketStore(small: 256, large: 8)
    var frames: [MirrorInteropFrame] = []

    init(_ port: ColoRuntime.SocketPort) { self.port = port }

    func turn() {
        var descriptors: [pollfd] = []
        port.appendPollDescriptors(to: &descriptors)
        if descriptors.isEmpty {
            usleep(5000)
        } else if poll(&descriptors, nfds_t(descriptors.count), 5) > 0 {
            _ = port.receive(into: store, limit: 64, now: Self.now()) { ref in
                frames.append(
                    MirrorInteropFrame(bytes: Array(store.frame(ref)), vnetHeaderLength: store.vnetHeader(ref).count))
                store.release(ref)
            }
        }
        port.service(now: Self.now())
    }

    @discardableResult
    func until(timeout: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            guard Date() < deadline else { return false }
            turn()
        }
        return true
    }

    static func now() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}

final class MirrorInteropLines: @unchecked Sendable {
    var all: [String] = []
}
