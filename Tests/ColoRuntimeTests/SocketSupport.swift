import ColoPacket
import ColoRuntime
import ColoStages
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Frames in QEMU's chardev framing, written here independently of the encoder under test.
func framed(_ ethernet: [UInt8], vnetHeader: [UInt8]? = nil) -> [UInt8] {
    func u32(_ value: Int) -> [UInt8] {
        [UInt8(value >> 24 & 0xff), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
    }
    guard let vnetHeader else { return u32(ethernet.count) + ethernet }
    return u32(vnetHeader.count + ethernet.count) + u32(vnetHeader.count) + vnetHeader + ethernet
}

/// An Ethernet frame of `size` bytes whose bytes say which frame it is.
func ethernetFrame(_ tag: UInt8, size: Int = 60) -> [UInt8] {
    var frame = [UInt8](repeating: 0, count: size)
    for index in 0..<size { frame[index] = UInt8(truncatingIfNeeded: index &* 7 &+ Int(tag)) }
    frame[12] = 0x08
    frame[13] = 0x00
    return frame
}

/// A unique Unix socket path for one test.
func socketPath(_ name: String) -> String {
    "/tmp/colo-sock-\(getpid())-\(name)-\(UInt32.random(in: 0...UInt32.max)).sock"
}

/// The test's end of a socket: plain blocking calls with timeouts.
final class Peer: @unchecked Sendable {
    let fd: Int32

    init(fd: Int32) { self.fd = fd }

    static func unix(_ path: String) throws -> Peer {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8)
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard result == 0 else {
            Glibc.close(fd)
            throw TestSocketError("connect \(path): \(String(cString: strerror(errno)))")
        }
        return Peer(fd: fd)
    }

    static func tcp(_ port: UInt16) throws -> Peer {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = loopback(port)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            Glibc.close(fd)
            throw TestSocketError("connect 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        return Peer(fd: fd)
    }

    deinit { Glibc.close(fd) }

    func write(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            guard written > 0 else { return }
            offset += written
        }
    }

    /// Reads exactly `count` bytes, or fewer when the stream ends or `timeout` passes.
    func read(_ count: Int, timeout: Double = 2) -> [UInt8] {
        var result: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        var chunk = [UInt8](repeating: 0, count: 65536)
        while result.count < count {
            let left = Int32(max(0, deadline.timeIntervalSinceNow) * 1000)
            var probe = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&probe, 1, left) > 0 else { break }
            let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, min($0.count, count - result.count), 0) }
            guard got > 0 else { break }
            result += chunk[0..<got]
        }
        return result
    }

    /// Whether the other side closed the connection (EOF within `timeout`).
    func closedByPeer(timeout: Double = 2) -> Bool {
        var probe = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&probe, 1, Int32(timeout * 1000)) > 0 else { return false }
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) <= 0
    }
}

func loopback(_ port: UInt16) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    return address
}

/// A listening TCP socket on 127.0.0.1 for client-mode ports to connect to.
final class TestListener {
    let fd: Int32
    let port: UInt16

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var address = loopback(0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && listen(fd, 4) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw TestSocketError("listen: \(String(cString: strerror(errno)))") }
        port = UInt16(bigEndian: address.sin_port)
    }

    deinit { Glibc.close(fd) }

    /// Accepts one connection within `timeout`, driving `pump` meanwhile (the port connects from its own loop).
    func accept(timeout: Double = 3, pump: () -> Void) -> Peer? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            pump()
            var probe = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&probe, 1, 10) > 0 {
                let peer = Glibc.accept(fd, nil, nil)
                if peer >= 0 { return Peer(fd: peer) }
            }
        }
        return nil
    }
}

struct TestSocketError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A frame as a port delivered it: the frame and the virtio-net header kept with it (empty: none).
struct Delivered: Equatable {
    let bytes: [UInt8]
    var vnetHeader: [UInt8] = []
}

/// Drives socket ports on the test's thread as the data thread would: poll their descriptors, receive, service.
final class PortPump {
    let store = PacketStore(small: 256, large: 8)
    var ports: [ColoRuntime.SocketPort]
    var delivered: [String: [Delivered]] = [:]

    init(_ ports: [ColoRuntime.SocketPort]) { self.ports = ports }

    /// One loop turn, waiting up to `timeout` ms for a descriptor.
    func turn(timeout: Int32 = 5) {
        var descriptors: [pollfd] = []
        var owners: [Int] = []
        for (index, port) in ports.enumerated() {
            let before = descriptors.count
            port.appendPollDescriptors(to: &descriptors)
            for _ in before..<descriptors.count { owners.append(index) }
        }
        if descriptors.isEmpty {
            usleep(UInt32(timeout) * 1000)
        } else if poll(&descriptors, nfds_t(descriptors.count), timeout) > 0 {
            var seen = Set<Int>()
            for (slot, descriptor) in descriptors.enumerated() where descriptor.revents != 0 {
                guard seen.insert(owners[slot]).inserted else { continue }
                let port = ports[owners[slot]]
                _ = port.receive(into: store, limit: 64, now: monotonicNow()) { ref in
                    delivered[port.id, default: []].append(
                        Delivered(bytes: Array(store.frame(ref)), vnetHeader: Array(store.vnetHeader(ref))))
                    store.release(ref)
                }
            }
        }
        for port in ports { port.service(now: monotonicNow()) }
    }

    /// Turns until `condition` holds (up to `timeout` seconds); returns whether it did.
    @discardableResult
    func until(timeout: Double = 3, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while !condition() {
            guard Date() < deadline else { return false }
            turn()
        }
        return true
    }

    func frames(_ id: String) -> [Delivered] { delivered[id] ?? [] }
}

func monotonicNow() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// A socket port collecting its log lines.
func socketPort(_ text: String, outputCapacity: Int = ColoRuntime.SocketPort.defaultOutputCapacity) throws -> (
    ColoRuntime.SocketPort, LogLines
) {
    guard case .socket(let spec) = try PortSpec.parse(text) else { throw TestSocketError("not a socket spec: \(text)") }
    let port = try ColoRuntime.SocketPort(spec: spec, outputCapacity: outputCapacity)
    let lines = LogLines()
    port.log = { lines.append($0) }
    return (port, lines)
}

final class LogLines: @unchecked Sendable {
    private(set) var all: [String] = []
    func append(_ line: String) { all.append(line) }
}

/// Bytes appended by one thread and read by another.
final class LockedBytes: @unchecked Sendable {
    private let storage = Mutex<[UInt8]>([])
    func append(_ bytes: [UInt8]) { storage.withLock { $0 += bytes } }
    var count: Int { storage.withLock { $0.count } }
    var bytes: [UInt8] { storage.withLock { $0 } }
}
