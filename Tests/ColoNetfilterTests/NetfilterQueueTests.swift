import ColoNetfilter
import ColoTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// What a queue thread saw of one packet (the payload itself is gone once the receive body returns).
struct PacketRecord: Sendable {
    var id: UInt32
    var hook: UInt8
    var hardwareProtocol: UInt16
    var mark: UInt32
    var inputInterfaceIndex: UInt32
    var outputInterfaceIndex: UInt32
    var length: Int
    var ipVersion: UInt8
    var ipProtocol: UInt8
    var destination: (UInt8, UInt8, UInt8, UInt8)
    var icmpType: UInt8

    init(_ packet: QueuedPacket) {
        let bytes = packet.payload
        func byte(_ offset: Int) -> UInt8 { offset < bytes.count ? bytes[offset] : 0 }
        id = packet.id
        hook = packet.hook
        hardwareProtocol = packet.hardwareProtocol
        mark = packet.mark
        inputInterfaceIndex = packet.inputInterfaceIndex
        outputInterfaceIndex = packet.outputInterfaceIndex
        length = bytes.count
        ipVersion = byte(0) >> 4
        ipProtocol = byte(9)
        destination = (byte(16), byte(17), byte(18), byte(19))
        icmpType = byte(Int(byte(0) & 0x0f) * 4)
    }
}

/// Everything a queue thread reports back to its test.
struct QueueRun: Sendable {
    var counters = NetfilterQueue.Counters()
    var packets: [PacketRecord] = []
    var statistics: [NetfilterQueue.KernelStatistics] = []
    /// Verdict or statistics failures inside the thread (Issue.record needs the test's task, so they come back).
    var failures: [String] = []
    /// Whether the queue reported itself closed when the thread finished.
    var closed = false
}

/// Runs `queueBody` on a thread inside `namespace`; once it reports its queue open, runs `traffic` here, then stops
/// and joins the thread in every path. The thread's own error wins (it explains a queue that never opened).
func withQueueThread<Traffic>(
    in namespace: String,
    _ queueBody: @escaping @Sendable (QueueThreadControl) throws -> QueueRun,
    traffic: () throws -> Traffic
) throws -> (traffic: Traffic, run: QueueRun) {
    let control = QueueThreadControl()
    let thread = try NamespaceThread.start(namespace: namespace) { () throws -> QueueRun in
        do {
            return try queueBody(control)
        } catch {
            control.markFailed()
            throw error
        }
    }
    let trafficResult: Result<Traffic, any Error>
    if control.waitUntilReady() {
        trafficResult = Result { try traffic() }
    } else {
        trafficResult = .failure(LabError(description: "the queue thread did not open its queue within 5 s"))
    }
    control.requestStop()
    let run = try thread.join()
    return (try trafficResult.get(), run)
}

/// The NFQUEUE rule every test puts in namespace b: incoming ICMP (the echo requests from a) to `queue`.
func icmpInputRule(queue: UInt16) -> [String] {
    ["INPUT", "-p", "icmp", "-j", "NFQUEUE", "--queue-num", "\(queue)"]
}

@Suite("NetfilterQueue on real kernel queues in network namespaces", .serialized)
struct NetfilterQueueTests {
    @Test("each queued echo request accepted: 3 received, ping succeeds, packet fields as the kernel set them")
    func acceptEach() throws {
        guard requireRoot() else { return }
        let pair = try NamespacePair(tag: "acc")
        defer { pair.destroy() }
        let queue = queueNumber(offset: 0)
        try pair.addRuleInB(icmpInputRule(queue: queue))
        let interfaceIndex = try pair.interfaceIndexInB()

        let (ping, run) = try withQueueThread(in: pair.nameB) { control in
            let nfq = try NetfilterQueue(queue: queue, failOpen: false)
            control.markReady()
            var run = QueueRun()
            try nfq.serve(until: control) { packet in
                run.packets.append(PacketRecord(packet))
                do { try nfq.verdict(id: packet.id, .accept) } catch { run.failures.append("\(error)") }
            }
            run.counters = nfq.counters
            return run
        } traffic: {
            try pair.runInA(
                ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-w", "5", NamespacePair.addressB], timeout: 8)
        }

        #expect(ping.succeeded, "ping through an accepting queue should succeed: \(ping)")
        #expect(pingReplies(ping) == 3, "3 replies expected: \(ping)")
        #expect(run.failures.isEmpty, "verdicts failed: \(run.failures)")
        #expect(run.counters.received == 3, "3 echo requests should be queued, counters \(run.counters)")
        #expect(run.counters.accepted == 3 && run.counters.errors == 0, "counters \(run.counters)")
        #expect(run.packets.map(\.id) == run.packets.map(\.id).sorted(), "ids increase")
        for packet in run.packets {
            #expect(packet.hook == 1, "NF_INET_LOCAL_IN (1) expected, got \(packet.hook)")
            #expect(packet.hardwareProtocol == 0x0800, "EtherType IPv4 expected, got \(packet.hardwareProtocol)")
            #expect(packet.inputInterfaceIndex == interfaceIndex, "came in on nfq0 (\(interfaceIndex))")
            #expect(packet.outputInterfaceIndex == 0, "no output device in INPUT")
            #expect(packet.ipVersion == 4 && packet.ipProtocol == 1, "raw IPv4 ICMP, no L2 header")
            #expect(packet.destination == (10, 50, 0, 2), "to namespace b's address")
            #expect(packet.icmpType == 8, "echo request")
            #expect(packet.length == 84, "20 + 8 + 56 bytes: the whole packet is copied")
        }
    }

    @Test("each queued echo request dropped: ping fails, every received packet dropped")
    func dropEach() throws {
        guard requireRoot() else { return }
        let pair = try NamespacePair(tag: "drop")
        defer { pair.destroy() }
        let queue = queueNumber(offset: 1)
        try pair.addRuleInB(icmpInputRule(queue: queue))

        let (ping, run) = try withQueueThread(in: pair.nameB) { control in
            let nfq = try NetfilterQueue(queue: queue, failOpen: false)
            control.markReady()
            var run = QueueRun()
            try nfq.serve(until: control) { packet in
                do { try nfq.verdict(id: packet.id, .drop) } catch { run.failures.append("\(error)") }
            }
            run.counters = nfq.counters
            return run
        } traffic: {
            try pair.runInA(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", NamespacePair.addressB], timeout: 6)
        }

        #expect(!ping.succeeded && pingReplies(ping) == 0, "ping through a dropping queue should fail: \(ping)")
        #expect(run.failures.isEmpty, "verdicts failed: \(run.failures)")
        #expect(run.counters.received >= 3, "at least the 3 echo requests: \(run.counters)")
        #expect(run.counters.dropped == run.counters.received && run.counters.accepted == 0, "\(run.counters)")
    }

    @Test("three held packets released by one batch verdict: the kernel held 3, then none; ping succeeds")
    func batchVerdict() throws {
        guard requireRoot() else { return }
        let pair = try NamespacePair(tag: "batch")
        defer { pair.destroy() }
        let queue = queueNumber(offset: 2)
        try pair.addRuleInB(icmpInputRule(queue: queue))

        let (ping, run) = try withQueueThread(in: pair.nameB) { control in
            let nfq = try NetfilterQueue(queue: queue, failOpen: false)
            control.markReady()
            var run = QueueRun()
            var held: [UInt32] = []
            try nfq.serve(until: control) { packet in
                held.append(packet.id)
                guard held.count == 3, let last = held.last else { return }
                do {
                    run.statistics.append(try nfq.kernelStatistics())
                    try nfq.batchVerdict(upTo: last, .accept)
                    run.statistics.append(try nfq.kernelStatistics())
                } catch {
                    run.failures.append("\(error)")
                }
            }
            run.counters = nfq.counters
            return run
        } traffic: {
            try pair.runInA(
                ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "3", "-w", "6", NamespacePair.addressB], timeout: 8)
        }

        #expect(ping.succeeded && pingReplies(ping) == 3, "all 3 replies after the batch release: \(ping)")
        #expect(run.failures.isEmpty, "\(run.failures)")
        #expect(run.counters.received == 3 && run.counters.batchVerdicts == 1, "\(run.counters)")
        #expect(run.counters.accepted == 0 && run.counters.dropped == 0, "no single verdicts: \(run.counters)")
        #expect(run.statistics.map(\.queueTotal) == [3, 0], "held before and after the batch: \(run.statistics)")
        #expect(run.statistics.first?.copyRange == NetfilterQueue.maximumCopyRange, "\(run.statistics)")
    }

    @Test("accept with a modified payload: the kernel uses our bytes (a corrupted ICMP checksum is dropped by b)")
    func acceptWithModifiedPayload() throws {
        guard requireRoot() else { return }
        let pair = try NamespacePair(tag: "mod")
        defer { pair.destroy() }
        let queue = queueNumber(offset: 3)
        try pair.addRuleInB(icmpInputRule(queue: queue))
        let checksumErrorsBefore = try pair.snmpCounterInB("Icmp", "InCsumErrors")

        let (ping, run) = try withQueueThread(in: pair.nameB) { control in
            let nfq = try NetfilterQueue(queue: queue, failOpen: false)
            control.markReady()
            var run = QueueRun()
            try nfq.serve(until: control) { packet in
                var bytes = Array(packet.payload)
                if let last = bytes.indices.last { bytes[last] ^= 0xFF }  // an ICMP data byte; checksum not fixed
                do {
                    try bytes.withUnsafeBytes { modified in
                        try nfq.verdict(id: packet.id, acceptWithModifiedPayload: modified)
                    }
                } catch {
                    run.failures.append("\(error)")
                }
            }
            run.counters = nfq.counters
            return run
        } traffic: {
            try pair.runInA(["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", NamespacePair.addressB], timeout: 6)
        }
        let checksumErrorsAfter = try pair.snmpCounterInB("Icmp", "InCsumErrors")

        #expect(run.failures.isEmpty, "\(run.failures)")
        #expect(run.counters.received >= 2 && run.counters.accepted == run.counters.received, "\(run.counters)")
        #expect(pingReplies(ping) == 0, "corrupted requests must not be answered: \(ping)")
        #expect(
            checksumErrorsAfter - checksumErrorsBefore == Int(run.counters.received),
            "b's ICMP InCsumErrors should count each modified request (\(checksumErrorsBefore) → \(checksumErrorsAfter))"
        )
    }

    @Test("inside a receive body: a nested receive is refused, close() takes effect when receive returns")
    func closeAndReenterFromBody() throws {
        guard requireRoot() else { return }
        let pair = try NamespacePair(tag: "body")
        defer { pair.destroy() }
        let queue = queueNumber(offset: 8)
        try pair.addRuleInB(icmpInputRule(queue: queue))

        let (ping, run) = try withQueueThread(in: pair.nameB) { control in
            let nfq = try NetfilterQueue(queue: queue, failOpen: false)
            control.markReady()
            var run = QueueRun()
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: .seconds(5))
            while !nfq.isClosed && !control.shouldStop && clock.now < deadline {
                var descriptor = pollfd(fd: nfq.fileDescriptor, events: Int16(POLLIN), revents: 0)
                guard poll(&descriptor, 1, 20) > 0 else { continue }
                try nfq.receive(maxPackets: 64) { packet in
                    do throws(NetfilterQueueError) {
                        try nfq.receive(maxPackets: 1) { _ in }
                    } catch {
                        run.failures.append(error.description)
                    }
                    do { try nfq.verdict(id: packet.id, .accept) } catch { run.failures.append("\(error)") }
                    nfq.close()
                    if nfq.isClosed { run.failures.append("closed inside the body") }
                }
            }
            run.counters = nfq.counters
            run.closed = nfq.isClosed
            return run
        } traffic: {
            try pair.runInA(["ping", "-n", "-c", "1", "-W", "2", NamespacePair.addressB], timeout: 5)
        }

        #expect(ping.succeeded, "the packet was accepted before the close: \(ping)")
        #expect(run.failures == [NetfilterQueueError.receiveReentered(queue: queue).description], "\(run.failures)")
        #expect(run.closed && run.counters.received == 1 && run.counters.accepted == 1, "\(run.counters)")
    }

    /// Opens a queue of length 1 that never reads while a 10-packet flood passes, then reports the kernel's view and
    /// drains what it held.
    private func floodAgainstFullQueue(failOpen: Bool, tag: String, offset: UInt16) throws -> (CommandResult, QueueRun)
    {
        let pair = try NamespacePair(tag: tag)
        defer { pair.destroy() }
        let queue = queueNumber(offset: offset)
        try pair.addRuleInB(icmpInputRule(queue: queue))

        return try withQueueThread(in: pair.nameB) { control in
            let nfq = try NetfilterQueue(queue: queue, maxLength: 1, failOpen: failOpen)
            control.markReady()
            var run = QueueRun()
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: .seconds(10))
            while !control.shouldStop && clock.now < deadline { usleep(5_000) }  // the receiver that does not read
            do { run.statistics.append(try nfq.kernelStatistics()) } catch { run.failures.append("\(error)") }
            try nfq.receive(maxPackets: 64) { packet in
                do { try nfq.verdict(id: packet.id, .drop) } catch { run.failures.append("\(error)") }
            }
            run.counters = nfq.counters
            return run
        } traffic: {
            try pair.runInA(
                ["ping", "-n", "-q", "-c", "10", "-i", "0.002", "-W", "1", NamespacePair.addressB], timeout: 6)
        }
    }

    @Test("fail-open, queue length 1, nobody reading: the kernel accepts the overflow, so most pings are answered")
    func failOpenAcceptsWhenFull() throws {
        guard requireRoot() else { return }
        let (ping, run) = try floodAgainstFullQueue(failOpen: true, tag: "fopen", offset: 4)

        let replies = pingReplies(ping) ?? 0
        #expect(replies >= 5, "fail-open should let most of the 10 through (expect 9): \(ping)")
        #expect(run.failures.isEmpty, "\(run.failures)")
        #expect(run.statistics.first?.queueTotal == 1, "the kernel holds exactly maxLength: \(run.statistics)")
        #expect(run.statistics.first?.queueDropped == 0, "fail-open drops nothing: \(run.statistics)")
        #expect(run.counters.received == 1, "only the held packet is delivered: \(run.counters)")
    }

    @Test("fail-closed, queue length 1, nobody reading: the kernel drops the overflow, no ping is answered")
    func failClosedDropsWhenFull() throws {
        guard requireRoot() else { return }
        let (ping, run) = try floodAgainstFullQueue(failOpen: false, tag: "fclose", offset: 5)

        #expect(pingReplies(ping) == 0, "nothing gets through a full fail-closed queue: \(ping)")
        #expect(run.failures.isEmpty, "\(run.failures)")
        #expect(run.statistics.first?.queueTotal == 1, "the kernel holds exactly maxLength: \(run.statistics)")
        #expect(run.statistics.first?.queueDropped == 9, "9 of 10 dropped as queue full: \(run.statistics)")
        #expect(run.counters.received == 1, "only the held packet is delivered: \(run.counters)")
    }

    /// What the error test observed inside its namespace.
    struct ErrorObservations: Sendable {
        var secondOpen: NetfilterQueueError?
        var unknownVerdictThrew: NetfilterQueueError?
        var countersAfterUnknownVerdict = NetfilterQueue.Counters()
        var kernelErrnoAfterUnknownVerdict: Int32 = 0
        var oversizedPayload: NetfilterQueueError?
        var afterClose: NetfilterQueueError?
        var reopenedAfterClose = false
        var reopenedAfterDeinit = false
        var descriptorAfterClose: Int32 = 0
    }

    @Test("errors: a queue number bound twice fails (EPERM) with a useful message; a bad verdict id is counted")
    func errors() throws {
        guard requireRoot() else { return }
        let pair = try NamespacePair(tag: "err")
        defer { pair.destroy() }
        let queue = queueNumber(offset: 6)

        let thread = try NamespaceThread.start(namespace: pair.nameB) { () throws -> ErrorObservations in
            var seen = ErrorObservations()
            let first = try NetfilterQueue(queue: queue, failOpen: false)
            do throws(NetfilterQueueError) {
                _ = try NetfilterQueue(queue: queue, failOpen: false)
            } catch {
                seen.secondOpen = error
            }
            // No packet 4242 is held: the send succeeds, the kernel answers with an error message on the socket.
            do throws(NetfilterQueueError) {
                try first.verdict(id: 4242, .accept)
            } catch {
                seen.unknownVerdictThrew = error
            }
            try first.receive(maxPackets: 8) { _ in }
            seen.countersAfterUnknownVerdict = first.counters
            seen.kernelErrnoAfterUnknownVerdict = first.lastKernelErrno
            let oversized = [UInt8](repeating: 0, count: 70_000)
            do {
                try oversized.withUnsafeBytes { try first.verdict(id: 1, acceptWithModifiedPayload: $0) }
            } catch let error as NetfilterQueueError {
                seen.oversizedPayload = error
            }
            first.close()
            seen.descriptorAfterClose = first.fileDescriptor
            do throws(NetfilterQueueError) {
                try first.verdict(id: 1, .accept)
            } catch {
                seen.afterClose = error
            }
            do {
                let reopened = try NetfilterQueue(queue: queue, failOpen: true)
                seen.reopenedAfterClose = true
                _ = reopened  // released here: deinit must free the number too
            }
            seen.reopenedAfterDeinit = (try? NetfilterQueue(queue: queue, failOpen: false)) != nil
            return seen
        }
        let seen = try thread.join()

        // Observed on Linux 6.x: a second socket binding a number another socket owns gets EPERM (not EBUSY) —
        // the same errno as a missing CAP_NET_ADMIN, which is why the message names both causes.
        #expect(
            seen.secondOpen == .createQueueFailed(queue: queue, errno: EPERM),
            "observed \(String(describing: seen.secondOpen))"
        )
        let message = seen.secondOpen?.description ?? ""
        #expect(
            message.hasPrefix("nfq_create_queue(\(queue)) failed: Operation not permitted")
                && message.contains("is another program bound to queue \(queue)?"),
            "message: \(message)"
        )
        #expect(seen.unknownVerdictThrew == nil, "the verdict send itself succeeds")
        #expect(
            seen.countersAfterUnknownVerdict.errors == 1,
            "the kernel's ENOENT reply is counted: \(seen.countersAfterUnknownVerdict)")
        #expect(seen.kernelErrnoAfterUnknownVerdict == ENOENT, "errno \(seen.kernelErrnoAfterUnknownVerdict)")
        #expect(seen.countersAfterUnknownVerdict.received == 0, "\(seen.countersAfterUnknownVerdict)")
        #expect(
            seen.oversizedPayload == .payloadTooLarge(queue: queue, id: 1, length: 70_000),
            "\(String(describing: seen.oversizedPayload))"
        )
        #expect(seen.afterClose == .closed(queue: queue), "\(String(describing: seen.afterClose))")
        #expect(seen.descriptorAfterClose == -1)
        #expect(seen.reopenedAfterClose && seen.reopenedAfterDeinit, "close() and deinit release the queue number")
    }

    @Test("namespaces are gone after a test's cleanup")
    func namespaceCleanup() throws {
        guard requireRoot() else { return }
        let pair = try NamespacePair(tag: "clean")
        try pair.addRuleInB(icmpInputRule(queue: queueNumber(offset: 7)))
        #expect(pair.anyNamespaceExists)
        pair.destroy()
        #expect(!pair.anyNamespaceExists, "\(pair.nameA) and \(pair.nameB) should be deleted")
    }
}
