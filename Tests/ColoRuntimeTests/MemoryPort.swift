import ColoPacket
import ColoRuntime
import ColoStages
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A port in memory for driving a `GraphProxy` on its own thread: frames queued with `push` are yielded (a pipe
/// wakes the proxy's poll), frames sent to it are collected.
final class MemoryPort: FramePort, @unchecked Sendable {
    let id: String
    let linkType: LinkType
    private let inbox = Mutex<[[UInt8]]>([])
    private let outbox = Mutex<[[UInt8]]>([])
    private let wake: (read: Int32, write: Int32)
    private(set) var portCounters = PortCounters()
    /// When set, each receive call notes (port id, frames received so far) here, in the order the proxy read.
    var journal: ReceiveJournal?

    init(_ id: String, linkType: LinkType = .ethernet) {
        self.id = id
        self.linkType = linkType
        var fds: [Int32] = [0, 0]
        precondition(pipe(&fds) == 0)
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        wake = (fds[0], fds[1])
    }

    deinit {
        Glibc.close(wake.read)
        Glibc.close(wake.write)
    }

    func push(_ frame: [UInt8]) { push(contentsOf: [frame]) }

    /// Queues all of `frames` at once (the proxy sees none of them before it sees all).
    func push(contentsOf frames: [[UInt8]]) {
        inbox.withLock { $0.append(contentsOf: frames) }
        var byte: UInt8 = 1
        _ = Glibc.write(wake.write, &byte, 1)
    }

    var sent: [[UInt8]] { outbox.withLock { $0 } }

    func appendPollDescriptors(to descriptors: inout [pollfd]) {
        descriptors.append(pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0))
    }

    func receive(into store: PacketStore, limit: Int, now: UInt64, deliver: (PacketRef) -> Void) -> Int {
        var byte: UInt8 = 0
        while Glibc.read(wake.read, &byte, 1) > 0 {}
        // At most `limit` frames a call, as a real port's batch; the rest wait (and keep the pipe readable).
        let (frames, more) = inbox.withLock { queue -> ([[UInt8]], Bool) in
            let taken = Array(queue.prefix(limit))
            queue.removeFirst(taken.count)
            return (taken, !queue.isEmpty)
        }
        if more {
            var again: UInt8 = 1
            _ = Glibc.write(wake.write, &again, 1)
        }
        for frame in frames {
            guard
                let ref = frame.withUnsafeBytes({
                    store.store($0, linkType: linkType, source: .other, receivedAt: now)
                })
            else {
                portCounters.storeFull += 1
                continue
            }
            portCounters.framesIn += 1
            deliver(ref)
        }
        journal?.note(id, portCounters.framesIn)
        return frames.count
    }

    func send(_ frame: UnsafeRawBufferPointer, vnetHeader: UnsafeRawBufferPointer) -> Bool {
        outbox.withLock { $0.append(Array(frame)) }
        portCounters.framesOut += 1
        return true
    }

    func service(now: UInt64) {}
    func close() {}
}

/// The order in which a proxy read its memory ports: (port id, that port's frames in so far) per receive call.
final class ReceiveJournal: @unchecked Sendable {
    private let entries = Mutex<[(String, UInt64)]>([])
    func note(_ id: String, _ framesIn: UInt64) { entries.withLock { $0.append((id, framesIn)) } }
    var all: [(String, UInt64)] { entries.withLock { $0 } }
}
