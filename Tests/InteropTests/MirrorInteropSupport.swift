import ColoRuntime
import ColoStages
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

/// A paused QEMU with filter-mirror from a UDP socket netdev to a chardev server (WIRE.md §1's recipe).
final class MirrorInteropQEMU {
    let chardevPort: UInt16
    let netdevLocalPort: UInt16
    private let process = Process()
    private let udp: Int32

    init(vnetHeaderSupport: Bool) throws {
        chardevPort = mirrorInteropFreePort(Int32(SOCK_STREAM.rawValue))
        netdevLocalPort = mirrorInteropFreePort(Int32(SOCK_DGRAM.rawValue))
        let remotePort = mirrorInteropFreePort(Int32(SOCK_DGRAM.rawValue))
        process.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-system-x86_64")
        process.arguments = [
            "-machine", "pc", "-S", "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "none",
            "-netdev", "socket,id=hn0,udp=127.0.0.1:\(remotePort),localaddr=127.0.0.1:\(netdevLocalPort)",
            "-device", "e1000,netdev=hn0",
            "-chardev", "socket,id=m0,host=127.0.0.1,port=\(chardevPort),server=on,wait=off",
            "-object",
            "filter-mirror,id=f0,netdev=hn0,queue=tx,outdev=m0,vnet_hdr_support=\(vnetHeaderSupport ? "on" : "off")",
        ]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        do {
            try process.run()
        } catch {
            close(udp)
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
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        close(udp)
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
                let length = store.metadata(ref).pointee.vnetHeaderLength
                let bytes = Array(store.frame(ref))
                frames.append(MirrorInteropFrame(bytes: Array(bytes[length...]), vnetHeaderLength: length))
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
