import ColoPorts
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Moves the bytes of one connected stream socket off the data thread (on the process's socket I/O thread,
/// `SocketIOLoop`), so that the data thread never spends its time in `recv`/`send`: on loopback and TAP-less
/// deployments those calls also run the peer's TCP receive path, which took about a quarter of its time.
///
/// The data thread keeps everything else (accepting, connecting, framing, errors, closing): it `attach`es a
/// connected non-blocking descriptor, takes what was read as chunks of bytes (`takeInput`, then `recycle`),
/// writes frames into its current output chunk and `publish`es it, and `detach`es before it closes the
/// descriptor. The I/O thread touches the descriptor only between `attach` and the acknowledged `detach`.
///
/// Memory is fixed: `inputChunks` chunks of `inputChunkSize` bytes (a full set stops reading, leaving the bytes
/// in the kernel, so the peer waits), and `outputChunks` chunks for output, whose queued bytes are bounded by
/// the owner. A chunk belongs to one thread at a time; it changes hands under the lock.
final class SocketStreamPump: @unchecked Sendable {
    /// What the pump read: bytes, or how the stream ended for it.
    enum InputKind: Equatable {
        case data
        case endOfStream
        case readFailed(Int32)
        case writeFailed(Int32)
    }

    struct Input {
        let kind: InputKind
        /// The bytes (empty unless `.data`); valid until `recycle(chunk)`.
        let bytes: UnsafeRawBufferPointer
        let chunk: Int
    }

    let inputChunkSize: Int
    let outputChunkSize: Int
    /// Readable while read input (or an end) waits for the data thread.
    let wakeDescriptor: Int32
    private let wakeWriter: Int32
    private let loop: SocketIOLoop
    private let inputMemory: UnsafeMutableRawPointer
    private let outputMemory: UnsafeMutableRawPointer
    private let inputChunks: Int
    private let outputChunks: Int
    private let state: Mutex<Shared>
    /// Bytes the pump has written since `attach`; the owner bounds its queue with it.
    private let sentBytes = Atomic<Int>(0)
    /// Entries in the ready-input queue (changed under the lock), readable without it.
    private let readyCount = Atomic<Int>(0)

    private struct Shared: ~Copyable {
        var descriptor: Int32 = -1
        var detachRequested = false
        /// Input chunks free for the pump, read ones (with their kind and length) for the data thread.
        var freeInput: [Int] = []
        var readyInput: [(chunk: Int, kind: InputKind, count: Int)] = []
        /// The stream ended or failed: nothing more is read until the next attach.
        var inputEnded = false
        /// The pump found no free input chunk and stopped polling for input; recycling enough chunks wakes it.
        var inputStarved = false
        /// The wake pipe holds a poke the data thread has not taken: at most one is outstanding, so a pump that
        /// publishes chunk after chunk writes to the pipe once per turn of the data loop, not once a chunk.
        var wakePending = false
        var writeFailed = false
        /// Output chunks published by the data thread (chunk, length), the first partly written up to `written`.
        var pendingOutput: [(chunk: Int, count: Int)] = []
        var written = 0
        var freeOutput: [Int] = []

        /// Whether the data thread needs a poke for what was just queued (none is outstanding).
        mutating func wakeData() -> Bool {
            guard !wakePending else { return false }
            wakePending = true
            return true
        }
    }

    init(
        inputChunks: Int = 8, inputChunkSize: Int = 131_072, outputChunks: Int = 4, outputChunkSize: Int,
        name: String
    ) throws(PortError) {
        var wake: [Int32] = [0, 0]
        guard pipe(&wake) == 0 else { throw PortError(operation: "pipe", device: name, code: errno, hint: nil) }
        loop = try SocketIOLoop.shared()
        for fd in wake {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        wakeDescriptor = wake[0]
        wakeWriter = wake[1]
        self.inputChunks = max(2, inputChunks)
        self.outputChunks = max(2, outputChunks)
        self.inputChunkSize = inputChunkSize
        self.outputChunkSize = outputChunkSize
        inputMemory = .allocate(byteCount: self.inputChunks * inputChunkSize, alignment: 64)
        outputMemory = .allocate(byteCount: self.outputChunks * outputChunkSize, alignment: 64)
        var shared = Shared()
        shared.freeInput = Array(0..<self.inputChunks)
        // Chunk 0 starts as the data thread's current output chunk.
        shared.freeOutput = Array(1..<self.outputChunks)
        shared.readyInput.reserveCapacity(self.inputChunks + 2)
        shared.pendingOutput.reserveCapacity(self.outputChunks)
        state = Mutex(shared)
        loop.register(self)
    }

    deinit {
        inputMemory.deallocate()
        outputMemory.deallocate()
        for fd in [wakeDescriptor, wakeWriter] { Glibc.close(fd) }
    }

    /// Leaves the I/O thread (after `detach`: with no descriptor it has nothing to do with this pump).
    func stop() { loop.unregister(self) }

    // MARK: - Data thread

    /// Starts pumping `descriptor` (connected, non-blocking). Output chunk 0 is the data thread's current one.
    func attach(_ descriptor: Int32) {
        sentBytes.store(0, ordering: .relaxed)
        state.withLock { shared in
            shared.descriptor = descriptor
            shared.inputEnded = false
            shared.writeFailed = false
        }
        loop.poke()
    }

    /// Stops the pump using the descriptor and waits until it has; forgets unread input and unsent output.
    /// Returns the output bytes that were not written. The data thread's current output chunk stays its own.
    func detach() -> Int {
        let attached = state.withLock { shared -> Bool in
            guard shared.descriptor >= 0 else { return false }
            shared.detachRequested = true
            return true
        }
        if attached {
            loop.poke()
            // The pump answers at the top of its loop: its calls on the descriptor are non-blocking.
            while state.withLock({ $0.detachRequested }) { usleep(50) }
        }
        Self.drain(wakeDescriptor)
        return state.withLock { shared -> Int in
            for entry in shared.readyInput where entry.kind == .data { shared.freeInput.append(entry.chunk) }
            readyCount.subtract(shared.readyInput.count, ordering: .relaxed)
            shared.readyInput.removeAll(keepingCapacity: true)
            shared.wakePending = false
            shared.inputStarved = false
            var discarded = 0
            for (index, entry) in shared.pendingOutput.enumerated() {
                discarded += entry.count - (index == 0 ? shared.written : 0)
                shared.freeOutput.append(entry.chunk)
            }
            shared.pendingOutput.removeAll(keepingCapacity: true)
            shared.written = 0
            return discarded
        }
    }

    /// The oldest read chunk or end, if any. A `.data` input's chunk must be given back with `recycle`.
    func takeInput() -> Input? {
        // The pipe is emptied before the flag is cleared: a poke after that is seen by the next poll.
        if state.withLock({ $0.wakePending }) { Self.drain(wakeDescriptor) }
        // What stays queued is announced by `hasInput`, which the data loop reads every turn (a poke of its own
        // pipe was two thirds of the data thread's writes).
        let entry = state.withLock { shared -> (chunk: Int, kind: InputKind, count: Int)? in
            shared.wakePending = false
            guard !shared.readyInput.isEmpty else { return nil }
            let first = shared.readyInput.removeFirst()
            readyCount.subtract(1, ordering: .relaxed)
            return (first.chunk, first.kind, first.count)
        }
        guard let entry else { return nil }
        let bytes =
            entry.kind == .data
            ? UnsafeRawBufferPointer(start: inputMemory + entry.chunk * inputChunkSize, count: entry.count)
            : UnsafeRawBufferPointer(start: inputMemory, count: 0)
        return Input(kind: entry.kind, bytes: bytes, chunk: entry.chunk)
    }

    func recycle(_ input: Input) {
        guard input.kind == .data else { return }
        let pumpWaits = state.withLock { shared -> Bool in
            shared.freeInput.append(input.chunk)
            // A starved pump is woken once half the chunks are free again, so it reads several in a row.
            guard shared.inputStarved, shared.freeInput.count * 2 >= inputChunks else { return false }
            shared.inputStarved = false
            return true
        }
        if pumpWaits { loop.poke() }
    }

    /// Memory of output chunk `chunk`.
    func outputChunk(_ chunk: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: outputMemory + chunk * outputChunkSize, count: outputChunkSize)
    }

    /// Hands `count` bytes of output chunk `chunk` to the pump; returns the next chunk for the data thread, or
    /// nil when every other chunk is still queued (the data thread then keeps `chunk` and may not publish it).
    func publish(_ chunk: Int, count: Int) -> Int? {
        let next = state.withLock { shared -> (Int, Bool)? in
            guard shared.descriptor >= 0, !shared.writeFailed, let next = shared.freeOutput.popLast() else {
                return nil
            }
            shared.pendingOutput.append((chunk, count))
            // With output already queued the pump is polling for room and will come to this chunk itself.
            return (next, shared.pendingOutput.count == 1)
        }
        guard let next else { return nil }
        if next.1 { loop.poke() }
        return next.0
    }

    /// Whether read input (or an end) waits for `takeInput`; no lock, so it may lag a publish by a moment (the
    /// pump's poke covers that one).
    var hasInput: Bool { readyCount.load(ordering: .relaxed) > 0 }

    /// Output bytes written by the pump since `attach`.
    var written: Int { sentBytes.load(ordering: .acquiring) }

    // MARK: - I/O thread

    /// What the I/O thread should wait for on this pump's descriptor (events 0: nothing); answers a pending
    /// detach first.
    func plan() -> (fd: Int32, events: Int16) {
        state.withLock { shared in
            if shared.detachRequested {
                shared.descriptor = -1
                shared.detachRequested = false
            }
            let fd = shared.descriptor
            let read = fd >= 0 && !shared.inputEnded && !shared.freeInput.isEmpty
            shared.inputStarved = fd >= 0 && !shared.inputEnded && shared.freeInput.isEmpty
            let write = fd >= 0 && !shared.writeFailed && !shared.pendingOutput.isEmpty
            var events: Int16 = 0
            if read { events |= Int16(POLLIN) }
            if write { events |= Int16(POLLOUT) }
            return (fd, events)
        }
    }

    /// One read and/or one write, as `plan` asked and poll reported.
    func service(_ fd: Int32, planned: Int16, revents: Int16) {
        let failure = Int16(POLLHUP | POLLERR)
        if planned & Int16(POLLIN) != 0 && revents & (Int16(POLLIN) | failure) != 0 { readOnce(fd) }
        if planned & Int16(POLLOUT) != 0 && revents & (Int16(POLLOUT) | failure) != 0 { writeOnce(fd) }
    }

    private func readOnce(_ fd: Int32) {
        guard let chunk = state.withLock({ $0.freeInput.popLast() }) else { return }
        var count: Int
        repeat {
            count = recv(fd, inputMemory + chunk * inputChunkSize, inputChunkSize, 0)
        } while count < 0 && errno == EINTR
        let code = errno
        let published = state.withLock { shared -> Bool in
            if count > 0 {
                shared.readyInput.append((chunk, .data, count))
            } else {
                shared.freeInput.append(chunk)
                if count < 0 && (code == EAGAIN || code == EWOULDBLOCK) { return false }
                shared.inputEnded = true
                shared.readyInput.append((0, count == 0 ? .endOfStream : .readFailed(code), 0))
            }
            readyCount.add(1, ordering: .relaxed)
            return shared.wakeData()
        }
        if published { poke(wakeWriter) }
    }

    private func writeOnce(_ fd: Int32) {
        let next = state.withLock { shared -> (Int, Int, Int)? in
            guard let first = shared.pendingOutput.first else { return nil }
            return (first.chunk, first.count, shared.written)
        }
        guard let (chunk, count, offset) = next else { return }
        var sent: Int
        repeat {
            sent = Glibc.send(fd, outputMemory + chunk * outputChunkSize + offset, count - offset, Int32(MSG_NOSIGNAL))
        } while sent < 0 && errno == EINTR
        let code = errno
        if sent > 0 { sentBytes.add(sent, ordering: .releasing) }
        let failed = state.withLock { shared -> Bool in
            if sent > 0 {
                shared.written += sent
                if shared.written == count {
                    shared.pendingOutput.removeFirst()
                    shared.freeOutput.append(chunk)
                    shared.written = 0
                }
                return false
            }
            if code == EAGAIN || code == EWOULDBLOCK { return false }
            shared.writeFailed = true
            shared.readyInput.append((0, .writeFailed(code), 0))
            readyCount.add(1, ordering: .relaxed)
            return shared.wakeData()
        }
        if failed { poke(wakeWriter) }
    }

    // MARK: - Pipes

    private func poke(_ fd: Int32) {
        var byte: UInt8 = 1
        _ = Glibc.write(fd, &byte, 1)
    }

    /// Empties a wake-up pipe: one read unless it held a full buffer's worth of pokes.
    static func drain(_ fd: Int32) {
        var bytes = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while withUnsafeMutableBytes(of: &bytes, { Glibc.read(fd, $0.baseAddress, $0.count) }) == 64 {}
    }
}

/// The one thread that moves the bytes of every socket port's connection in the process (each port's
/// `SocketStreamPump`): a thread per port made six runnable threads of the benchmark's four on two cores, and
/// the data thread lost its core to them thousands of times a second.
final class SocketIOLoop: @unchecked Sendable {
    private static let instance = Mutex<SocketIOLoop?>(nil)

    /// The process's loop, started on first use.
    static func shared() throws(PortError) -> SocketIOLoop {
        try instance.withLock { (current: inout SocketIOLoop?) throws(PortError) -> SocketIOLoop in
            if let current { return current }
            let loop = try SocketIOLoop()
            current = loop
            return loop
        }
    }

    private let controlReader: Int32
    private let controlWriter: Int32
    private let members = Mutex<[SocketStreamPump]>([])

    private init() throws(PortError) {
        var control: [Int32] = [0, 0]
        guard pipe(&control) == 0 else {
            throw PortError(operation: "pipe", device: "socket I/O thread", code: errno, hint: nil)
        }
        for fd in control {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        controlReader = control[0]
        controlWriter = control[1]
        let thread = Thread { [unowned self] in self.run() }
        thread.name = "colo-proxy io"
        thread.start()
    }

    func register(_ pump: SocketStreamPump) {
        members.withLock { $0.append(pump) }
        poke()
    }

    func unregister(_ pump: SocketStreamPump) {
        members.withLock { $0.removeAll { $0 === pump } }
        poke()
    }

    /// Wakes the thread to look at every pump's plan again.
    func poke() {
        var byte: UInt8 = 1
        _ = Glibc.write(controlWriter, &byte, 1)
    }

    private func run() {
        var descriptors: [pollfd] = []
        var owners: [(pump: SocketStreamPump, planned: Int16)] = []
        while true {
            let pumps = members.withLock { $0 }
            descriptors.removeAll(keepingCapacity: true)
            owners.removeAll(keepingCapacity: true)
            descriptors.append(pollfd(fd: controlReader, events: Int16(POLLIN), revents: 0))
            for pump in pumps {
                let plan = pump.plan()
                guard plan.events != 0 else { continue }
                descriptors.append(pollfd(fd: plan.fd, events: plan.events, revents: 0))
                owners.append((pump, plan.events))
            }
            guard poll(&descriptors, nfds_t(descriptors.count), -1) > 0 else { continue }
            if descriptors[0].revents != 0 {
                SocketStreamPump.drain(controlReader)
            }
            for (slot, owner) in owners.enumerated() where descriptors[slot + 1].revents != 0 {
                owner.pump.service(
                    descriptors[slot + 1].fd, planned: owner.planned, revents: descriptors[slot + 1].revents)
            }
        }
    }
}
