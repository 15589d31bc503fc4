import ColoPorts
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// How other threads (the control socket, signal waiters) reach a data thread that owns all packet state: work is
/// queued under a lock and the data thread is woken through a pipe it polls.
final class DataThreadMailbox<Owner: AnyObject>: @unchecked Sendable {
    let wakeDescriptor: Int32
    private let wakeWriter: Int32
    private let pending = Mutex<[@Sendable (Owner) -> Void]>([])
    private let stopFlag = Atomic<Bool>(false)

    init(device: String) throws(PortError) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
            throw PortError(operation: "pipe", device: device, code: errno, hint: nil)
        }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        wakeDescriptor = fds[0]
        wakeWriter = fds[1]
    }

    deinit {
        Glibc.close(wakeDescriptor)
        Glibc.close(wakeWriter)
    }

    var stopRequested: Bool { stopFlag.load(ordering: .acquiring) }

    func requestStop() {
        stopFlag.store(true, ordering: .releasing)
        poke()
    }

    /// Queues `work` for the data thread and waits up to `timeout` seconds for its result.
    func perform<T: Sendable>(timeout: Double, _ work: @escaping @Sendable (Owner) -> T) -> T? {
        let result = Mutex<T?>(nil)
        let done = Atomic<Bool>(false)
        pending.withLock {
            $0.append({ owner in
                let value = work(owner)
                result.withLock { $0 = value }
                done.store(true, ordering: .releasing)
            })
        }
        poke()
        let deadline = ContinuousClock.now.advanced(by: .milliseconds(Int(timeout * 1000)))
        while !done.load(ordering: .acquiring) {
            if ContinuousClock.now >= deadline { return nil }
            usleep(1000)
        }
        return result.withLock { $0 }
    }

    /// On the data thread: empties the wake pipe and runs what was queued. Returns whether anything ran.
    func runPending(_ owner: Owner) -> Bool {
        var byte: UInt8 = 0
        while Glibc.read(wakeDescriptor, &byte, 1) > 0 {}
        let work = pending.withLock { queue -> [@Sendable (Owner) -> Void] in
            let taken = queue
            queue.removeAll()
            return taken
        }
        for item in work { item(owner) }
        return !work.isEmpty
    }

    private func poke() {
        var byte: UInt8 = 1
        _ = Glibc.write(wakeWriter, &byte, 1)
    }
}

func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

func wallClockNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}
