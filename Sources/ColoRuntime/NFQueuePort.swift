import ColoNetfilter
import ColoPacket
import ColoStages

#if canImport(Glibc)
    import Glibc
#endif

/// An `nfqueue` port (SPEC §1.1): raw IP packets from a netfilter queue, each held in the kernel until the proxy
/// settles it. Accepts are gathered over a loop turn and given in one batch verdict when they cover every packet
/// still held (the common case: the client's queue, accepted as it is read); otherwise one by one. Drops go at
/// once. The queue's `maxlen` bounds what the kernel holds; `fail_open` says what it does beyond that (and what
/// this port does with packets the store has no room for, and with packets still held when it closes).
public final class NFQueuePort: FramePort {
    public let id: String
    public let linkType: LinkType = .rawIP
    public let queue: NetfilterQueue
    public private(set) var portCounters = PortCounters()
    /// Packets settled: accepted, dropped, and verdicts given in batches.
    public private(set) var accepted: UInt64 = 0
    public private(set) var dropped: UInt64 = 0
    public private(set) var batches: UInt64 = 0

    private let failOpen: Bool
    /// Per store slot: the packet id of the held packet in it, plus bit 32 while held.
    private var held: UnsafeMutablePointer<UInt64>?
    private var heldCapacity = 0
    private var outstanding = 0
    private var pendingAccepts: [UInt32] = []
    private var closed = false

    public init(spec: NFQueuePortSpec) throws {
        id = spec.id
        failOpen = spec.failOpen
        queue = try NetfilterQueue(queue: spec.queueNumber, maxLength: spec.maxLength, failOpen: spec.failOpen)
        pendingAccepts.reserveCapacity(Int(min(spec.maxLength, 65536)))
    }

    deinit {
        close()
        held?.deallocate()
    }

    public var holdsVerdicts: Bool { true }

    public func appendPollDescriptors(to descriptors: inout [pollfd]) {
        guard !closed else { return }
        descriptors.append(pollfd(fd: queue.fileDescriptor, events: Int16(POLLIN), revents: 0))
    }

    public func receive(into store: PacketStore, limit: Int, now: UInt64, deliver: (PacketRef) -> Void) -> Int {
        guard !closed else { return 0 }
        if held == nil {
            heldCapacity = store.smallCount + store.largeCount
            held = .allocate(capacity: heldCapacity)
            held?.initialize(repeating: 0, count: heldCapacity)
        }
        guard let held else { return 0 }
        var delivered = 0
        do throws(NetfilterQueueError) {
            try queue.receive(maxPackets: limit) { packet in
                portCounters.framesIn &+= 1
                portCounters.bytesIn &+= UInt64(packet.payload.count)
                guard let ref = store.acquire(length: packet.payload.count), Int(ref.index) < heldCapacity else {
                    // No room: the kernel's policy for a full queue applies here too.
                    portCounters.storeFull &+= 1
                    try? queue.verdict(id: packet.id, failOpen ? .accept : .drop)
                    return
                }
                store.buffer(ref).copyMemory(from: packet.payload)
                let meta = store.metadata(ref)
                meta.pointee.length = packet.payload.count
                meta.pointee.linkType = .rawIP
                meta.pointee.receivedAt = now
                store.reparse(ref)
                held[Int(ref.index)] = UInt64(packet.id) | 1 << 32
                outstanding += 1
                delivered += 1
                deliver(ref)
            }
        } catch {
            portCounters.errors &+= 1
        }
        return delivered
    }

    public func settle(_ ref: PacketRef, accept: Bool) {
        guard let held, Int(ref.index) < heldCapacity else { return }
        let word = held[Int(ref.index)]
        guard word & (1 << 32) != 0 else { return }
        held[Int(ref.index)] = 0
        let packetID = UInt32(truncatingIfNeeded: word)
        if accept {
            pendingAccepts.append(packetID)
            return
        }
        outstanding -= 1
        dropped &+= 1
        do throws(NetfilterQueueError) { try queue.verdict(id: packetID, .drop) } catch { portCounters.errors &+= 1 }
    }

    /// An nfqueue port never writes: a frame sent here that it did not yield cannot be injected.
    public func send(_ frame: UnsafeRawBufferPointer, vnetHeader: UnsafeRawBufferPointer) -> Bool {
        portCounters.sendRefused &+= 1
        return false
    }

    public func service(now: UInt64) {
        flushAccepts()
    }

    private func flushAccepts() {
        guard !pendingAccepts.isEmpty else { return }
        let count = pendingAccepts.count
        defer {
            outstanding -= count
            accepted &+= UInt64(count)
            portCounters.framesOut &+= UInt64(count)
            pendingAccepts.removeAll(keepingCapacity: true)
        }
        do throws(NetfilterQueueError) {
            if count > 1 && count == outstanding {
                // Every held packet is accepted: one verdict covers them all (ids up to the newest).
                var newest = pendingAccepts[0]
                for id in pendingAccepts where id &- newest < 1 << 31 { newest = id }
                try queue.batchVerdict(upTo: newest, .accept)
                batches &+= 1
                return
            }
            for id in pendingAccepts { try queue.verdict(id: id, .accept) }
        } catch {
            portCounters.errors &+= 1
        }
    }

    /// Gives the verdicts still owed (accepts first, then what is held: accepted with `fail_open`, else dropped)
    /// and closes the queue.
    public func close() {
        guard !closed else { return }
        flushAccepts()
        if let held, outstanding > 0 {
            for index in 0..<heldCapacity where held[index] & (1 << 32) != 0 {
                let packetID = UInt32(truncatingIfNeeded: held[index])
                held[index] = 0
                try? queue.verdict(id: packetID, failOpen ? .accept : .drop)
                if failOpen { accepted &+= 1 } else { dropped &+= 1 }
            }
            outstanding = 0
        }
        closed = true
        queue.close()
    }
}
