import ColoPacket
import ColoPacketBuilder
import ColoPorts
import ColoTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

// The proxy as the wire of a "VM": a TAP/TUN device held by the test process, its interface moved into a namespace
// the test creates (LAB.md), and real kernel replies read back from the descriptor. Names carry the pid (and a tag
// per test, since tests run in parallel); namespaces are removed in every path.

private let proxyMAC = MACAddress(0x52, 0x54, 0x00, 0x60, 0x00, 0x01)
private let guestMAC = MACAddress(0x52, 0x54, 0x00, 0x60, 0x00, 0x02)

@Suite("TAP and TUN devices")
struct TapDeviceTests {
    @Test("a TAP in a namespace answers ARP and ping written to its descriptor")
    func tapCarriesArpAndPing() throws {
        guard requireRoot("TAP devices and network namespaces need CAP_NET_ADMIN") else { return }
        let namespace = try TapNamespace(tag: "tap")
        defer { namespace.destroy() }
        let device = try TapDevice(name: "ctap-\(getpid())", mode: .tap)
        defer { device.close() }
        #expect(device.name == "ctap-\(getpid())")
        #expect(device.vnetHeaderLength == 0)
        try namespace.adopt(device.name, address: "10.60.0.2/24", mac: guestMAC)

        let exchange = TapExchange(
            device: device, proxyIP: IPv4Address(10, 60, 0, 1), guestIP: IPv4Address(10, 60, 0, 2))
        try exchange.checkArp()
        try exchange.checkPing(identifier: UInt16(truncatingIfNeeded: getpid()), sequence: 1)

        #expect(device.counters.framesOut == 2, "one ARP request and one echo request written")
        #expect(device.counters.framesIn >= 2, "at least the ARP reply and the echo reply read")
        #expect(device.counters.errors == 0 && device.counters.writeWouldBlock == 0)
    }

    @Test("a TUN in a namespace answers a raw IPv4 ping")
    func tunCarriesPing() throws {
        guard requireRoot("TUN devices and network namespaces need CAP_NET_ADMIN") else { return }
        let namespace = try TapNamespace(tag: "tun")
        defer { namespace.destroy() }
        let device = try TapDevice(name: "ctun-\(getpid())", mode: .tun)
        defer { device.close() }
        #expect(device.mode.linkType == .rawIP)
        try namespace.adopt(device.name, address: "10.61.0.2/24", mac: nil)

        let exchange = TapExchange(
            device: device, proxyIP: IPv4Address(10, 61, 0, 1), guestIP: IPv4Address(10, 61, 0, 2))
        try exchange.checkPing(identifier: 0x6101, sequence: 7)
    }

    @Test("vnet_hdr=on: the kernel's default header is 10 bytes and TUNSETVNETHDRSZ changes it")
    func vnetHeaderLengths() throws {
        guard requireRoot("TAP devices need CAP_NET_ADMIN") else { return }
        // A name per open: a device outlives close() while a child that another test is spawning still holds a
        // copy of the descriptor table (until its exec drops O_CLOEXEC descriptors), so reopening at once may be EBUSY.
        let byDefault = try TapDevice(name: "cvha-\(getpid())", vnetHeader: true)
        defer { byDefault.close() }
        #expect(byDefault.vnetHeaderLength == 10, "struct virtio_net_hdr unless TUNSETVNETHDRSZ says otherwise")
        let withBuffers = try TapDevice(name: "cvhb-\(getpid())", vnetHeader: true, vnetHeaderLength: 12)
        defer { withBuffers.close() }
        #expect(withBuffers.vnetHeaderLength == 12)
        let plain = try TapDevice(name: "cvhc-\(getpid())")
        defer { plain.close() }
        #expect(plain.vnetHeaderLength == 0)

        let tooShort = #expect(throws: PortError.self) {
            try TapDevice(name: "cvhd-\(getpid())", vnetHeader: true, vnetHeaderLength: 4)
        }
        #expect(tooShort?.operation == "TUNSETVNETHDRSZ 4")
        #expect(tooShort?.code == EINVAL, "\(String(describing: tooShort))")
    }

    @Test("vnet_hdr=on: frames read carry a 12-byte virtio-net header; zeroed headers are accepted on write")
    func vnetHeaderTraffic() throws {
        guard requireRoot("TAP devices and network namespaces need CAP_NET_ADMIN") else { return }
        let namespace = try TapNamespace(tag: "vnet")
        defer { namespace.destroy() }
        let device = try TapDevice(name: "cvnt-\(getpid())", vnetHeader: true, vnetHeaderLength: 12)
        defer { device.close() }
        try namespace.adopt(device.name, address: "10.62.0.2/24", mac: guestMAC)

        let exchange = TapExchange(
            device: device, proxyIP: IPv4Address(10, 62, 0, 1), guestIP: IPv4Address(10, 62, 0, 2))
        let arpReply = try exchange.checkArp()
        let echoReply = try exchange.checkPing(identifier: 0x6202, sequence: 3)
        for (what, read) in [("ARP reply", arpReply), ("echo reply", echoReply)] {
            // flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers (little-endian on x86)
            let header = Array(read.prefix(12))
            #expect(header[1] == 0, "\(what): gso_type NONE with offloads off, header \(header)")
            #expect(header[0] & 0x01 == 0, "\(what): no NEEDS_CSUM with offloads off, header \(header)")
            #expect(header[4..<10].allSatisfy { $0 == 0 }, "\(what): no segmentation or checksum offsets, \(header)")
        }
        #expect(device.counters.bytesOut == 42 + 98, "bytesOut counts frames without the 12-byte headers")
    }

    @Test("a batch read returns every waiting frame and stops when none is left")
    func batchRead() throws {
        guard requireRoot("TAP devices and network namespaces need CAP_NET_ADMIN") else { return }
        let namespace = try TapNamespace(tag: "batch")
        defer { namespace.destroy() }
        let device = try TapDevice(name: "cbat-\(getpid())")
        defer { device.close() }
        try namespace.adopt(device.name, address: "10.63.0.2/24", mac: guestMAC)
        let exchange = TapExchange(
            device: device, proxyIP: IPv4Address(10, 63, 0, 1), guestIP: IPv4Address(10, 63, 0, 2))
        try exchange.checkArp()

        // Five pings, then wait until the replies have all been queued on the descriptor before one batch read.
        let sequences: [UInt16] = [11, 12, 13, 14, 15]
        for sequence in sequences {
            let frame = exchange.echoRequest(identifier: 0x6303, sequence: sequence)
            #expect(try frame.withUnsafeBytes { try device.write($0) })
        }
        let batch = TapFrameBatch(capacity: 64, slotSize: 2048)
        var replies: [UInt16] = []
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(3))
        while replies.count < sequences.count && clock.now < deadline {
            _ = try TapExchange.waitReadable(device, until: deadline)
            let count = try device.readBatch(into: batch)
            #expect(count == batch.count && count <= batch.capacity)
            for index in 0..<count {
                let packet = try Packet(batch.frame(at: index), linkType: .ethernet)
                if let icmp = packet.icmpv4, icmp.type == 0, icmp.identifier == 0x6303 {
                    replies.append(icmp.sequenceNumber)
                }
            }
        }
        #expect(replies == sequences, "every echo reply, in order")
        #expect(try device.readBatch(into: batch) == 0, "nothing left: the batch stops at EAGAIN")
    }

    @Test("attaching to a name another descriptor holds fails with EBUSY (same mode) or EINVAL (other mode)")
    func conflictingOpen() throws {
        guard requireRoot("TAP devices need CAP_NET_ADMIN") else { return }
        let name = "cbsy-\(getpid())"
        let holder = try TapDevice(name: name, mode: .tap)
        defer { holder.close() }

        let busy = #expect(throws: PortError.self) { try TapDevice(name: name, mode: .tap) }
        #expect(busy?.code == EBUSY)
        #expect(
            busy?.description
                == "TUNSETIFF \(name): Device or resource busy (another descriptor already holds this interface)")

        let otherMode = #expect(throws: PortError.self) { try TapDevice(name: name, mode: .tun) }
        #expect(otherMode?.code == EINVAL)
        #expect(
            otherMode?.description
                == "TUNSETIFF \(name): Invalid argument (an interface of that name exists and is not a TUN device "
                + "with these flags)")

        let tooLong = #expect(throws: PortError.self) { try TapDevice(name: "colo-name-too-long-\(getpid())") }
        #expect(tooLong?.code == ENAMETOOLONG, "\(String(describing: tooLong))")
    }

    @Test("without CAP_NET_ADMIN, TUNSETIFF fails with a message that says to run as root")
    func withoutNetAdmin() throws {
        guard requireRoot("dropping a capability needs to have it first") else { return }
        let name = "cprm-\(getpid())"
        // Capabilities are per thread in the kernel: drop CAP_NET_ADMIN on a thread of our own, never on the test
        // runner's shared threads.
        let outcome = try runOnOwnThread { () -> String in
            try dropEffectiveCapability(12)  // CAP_NET_ADMIN
            do throws(PortError) {
                let device = try TapDevice(name: name)
                device.close()
                return "opened"
            } catch {
                return error.description
            }
        }
        #expect(outcome == "TUNSETIFF \(name): Operation not permitted (needs CAP_NET_ADMIN: run as root)")
    }

    @Test("writes are refused with EIO while the interface is down and EINVAL when shorter than a header")
    func refusedWrites() throws {
        guard requireRoot("TAP devices and network namespaces need CAP_NET_ADMIN") else { return }
        let namespace = try TapNamespace(tag: "refused")
        defer { namespace.destroy() }
        let device = try TapDevice(name: "cref-\(getpid())")
        defer { device.close() }
        // Not brought up: the kernel refuses rather than queues.
        let arp = PacketBuilder.build(.arp(ARPSpec()), ethernet: EthernetSpec(destination: .broadcast))
        let down = #expect(throws: PortError.self) { try arp.withUnsafeBytes { try device.write($0) } }
        #expect(down?.description == "write \(device.name): Input/output error (the interface is down)")

        try namespace.adopt(device.name, address: "10.65.0.2/24", mac: guestMAC)
        let short: [UInt8] = [0x52, 0x54, 0x00]
        let tooShort = #expect(throws: PortError.self) { try short.withUnsafeBytes { try device.write($0) } }
        #expect(
            tooShort?.description
                == "write \(device.name): Invalid argument (shorter than a 14-byte Ethernet header)")
        #expect(device.counters.errors == 2 && device.counters.framesOut == 0)
    }

    @Test("a device whose namespace is deleted reports EBADFD; %d names are numbered by the kernel")
    func vanishedInterfaceAndNumberedName() throws {
        guard requireRoot("TAP devices and network namespaces need CAP_NET_ADMIN") else { return }
        let namespace = try TapNamespace(tag: "gone")
        defer { namespace.destroy() }
        let device = try TapDevice(name: "cgon-\(getpid())")
        defer { device.close() }
        #expect(try device.isPersistent() == false, "a device we create goes away with its descriptor")
        try namespace.adopt(device.name, address: "10.64.0.2/24", mac: guestMAC)
        namespace.destroy()  // the kernel deletes a TAP device with its namespace, even while our fd holds it

        // `ip netns del` returns before the kernel's teardown runs, and frames the namespace sent while up (IPv6
        // neighbour discovery) may still be queued: read them until the error, for at most 3 s.
        var buffer = [UInt8](repeating: 0, count: 2048)
        var gone: PortError?
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(3))
        while gone == nil && clock.now < deadline {
            do {
                if try buffer.withUnsafeMutableBytes({ try device.read(into: $0) }) == nil { usleep(10_000) }
            } catch let error as PortError {
                gone = error
            }
        }
        #expect(gone?.description == "read \(device.name): File descriptor in bad state (the interface is gone)")

        let numbered = try TapDevice(name: "cnum%d")
        defer { numbered.close() }
        #expect(numbered.name.hasPrefix("cnum") && numbered.name.dropFirst(4).allSatisfy(\.isNumber))
        #expect(numbered.name != "cnum%d", "the kernel filled in the number: \(numbered.name)")
    }

    @Test("a closed device reports EBADF on read and write instead of touching a reused descriptor")
    func closedDevice() throws {
        guard requireRoot("TAP devices need CAP_NET_ADMIN") else { return }
        let device = try TapDevice(name: "ccls-\(getpid())")
        device.close()
        device.close()
        #expect(device.fileDescriptor == -1)
        var buffer = [UInt8](repeating: 0, count: 64)
        let readError = #expect(throws: PortError.self) {
            try buffer.withUnsafeMutableBytes { try device.read(into: $0) }
        }
        #expect(readError?.description == "read ccls-\(getpid()): Bad file descriptor (the device is closed)")
        let writeError = #expect(throws: PortError.self) { try buffer.withUnsafeBytes { try device.write($0) } }
        #expect(writeError?.operation == "write" && writeError?.code == EBADF)
        #expect(device.counters.errors == 2)
    }
}

// MARK: Lab

/// A network namespace `tapns-<pid>-<tag>` that adopts a TAP/TUN interface; ``destroy()`` removes it (and with it
/// any interface still inside that no descriptor keeps).
private final class TapNamespace {
    let name: String
    private var destroyed = false

    init(tag: String) throws {
        name = "tapns-\(getpid())-\(tag)"
        _ = try? Command.run(["ip", "netns", "del", name])  // left over from an interrupted run with this pid
        try Command.mustRun(["ip", "netns", "add", name])
    }

    deinit { destroy() }

    /// Moves `interface` in, sets its MAC (TAP) and address, and brings it and `lo` up.
    func adopt(_ interface: String, address: String, mac: MACAddress?) throws {
        try Command.mustRun(["ip", "link", "set", interface, "netns", name])
        if let mac {
            try Command.mustRun(["ip", "-n", name, "link", "set", interface, "address", "\(mac)"])
        }
        try Command.mustRun(["ip", "-n", name, "addr", "add", address, "dev", interface])
        try Command.mustRun(["ip", "-n", name, "link", "set", interface, "up"])
        try Command.mustRun(["ip", "-n", name, "link", "set", "lo", "up"])
    }

    func destroy() {
        if destroyed { return }
        destroyed = true
        _ = try? Command.run(["ip", "netns", "del", name])
    }
}

/// The test process playing the network on the far side of a "VM" namespace: writes requests into the device and
/// reads the namespace kernel's answers, with every wait bounded.
private struct TapExchange {
    let device: TapDevice
    let proxyIP: IPv4Address
    let guestIP: IPv4Address

    private var ethernet: EthernetSpec? {
        device.mode == .tap ? EthernetSpec(destination: guestMAC, source: proxyMAC) : nil
    }
    private var header: [UInt8] { [UInt8](repeating: 0, count: device.vnetHeaderLength) }

    init(device: TapDevice, proxyIP: IPv4Address, guestIP: IPv4Address) {
        self.device = device
        self.proxyIP = proxyIP
        self.guestIP = guestIP
    }

    func echoRequest(identifier: UInt16, sequence: UInt16) -> [UInt8] {
        let payload = (0..<56).map { UInt8(truncatingIfNeeded: $0 &+ Int(sequence)) }
        let echo = ICMPSpec.echo(identifier: identifier, sequence: sequence, payload: payload)
        return header
            + PacketBuilder.build(
                .ipv4(IPv4Spec(source: proxyIP, destination: guestIP), .icmp(echo)), ethernet: ethernet)
    }

    /// Asks who has the guest's address and checks the answer; returns the bytes read (header included).
    @discardableResult
    func checkArp() throws -> [UInt8] {
        let request = ARPSpec(operation: 1, senderMAC: proxyMAC, senderIP: proxyIP, targetMAC: .zero, targetIP: guestIP)
        let frame =
            header
            + PacketBuilder.build(.arp(request), ethernet: EthernetSpec(destination: .broadcast, source: proxyMAC))
        #expect(try frame.withUnsafeBytes { try device.write($0) }, "the ARP request was accepted")
        let reply = try awaitPacket("an ARP reply from \(guestIP)") { packet in
            packet.arp?.operation == 2 && packet.arp?.senderIPv4 == guestIP
        }
        try reply.withUnsafeBytes { raw in
            let packet = try Packet(
                UnsafeRawBufferPointer(rebasing: raw[device.vnetHeaderLength...]), linkType: .ethernet)
            #expect(packet.ethernet?.destination == proxyMAC)
            #expect(packet.ethernet?.source == guestMAC)
            #expect(packet.arp?.senderMAC == guestMAC, "the guest's MAC, as set in the namespace")
            #expect(packet.arp?.targetMAC == proxyMAC)
            #expect(packet.arp?.targetIPv4 == proxyIP)
        }
        return reply
    }

    /// Pings the guest and checks the echo reply; returns the bytes read (header included).
    @discardableResult
    func checkPing(identifier: UInt16, sequence: UInt16) throws -> [UInt8] {
        let request = echoRequest(identifier: identifier, sequence: sequence)
        #expect(try request.withUnsafeBytes { try device.write($0) }, "the echo request was accepted")
        let reply = try awaitPacket("an echo reply from \(guestIP)") { packet in
            packet.icmpv4?.type == 0 && packet.icmpv4?.identifier == identifier
        }
        try reply.withUnsafeBytes { raw in
            let packet = try Packet(
                UnsafeRawBufferPointer(rebasing: raw[device.vnetHeaderLength...]), linkType: device.mode.linkType)
            if device.mode == .tap {
                #expect(packet.ethernet?.destination == proxyMAC && packet.ethernet?.source == guestMAC)
            }
            #expect(packet.ipv4?.source == guestIP && packet.ipv4?.destination == proxyIP)
            #expect(packet.isIPv4HeaderChecksumValid, "the kernel's IPv4 header checksum is complete")
            #expect(packet.transportChecksumStatus == .valid, "the kernel's ICMP checksum is complete")
            #expect(packet.icmpv4?.code == 0)
            #expect(packet.icmpv4?.sequenceNumber == sequence)
            let requestPayload = Array(request.suffix(56))
            #expect(packet.icmpv4.map { Array($0.body) } == requestPayload, "the echo carries our payload back")
        }
        return reply
    }

    /// Reads until a frame matches (answering the guest's own ARP requests for us meanwhile) or 3 s pass.
    private func awaitPacket(_ what: String, matching: (Packet) -> Bool) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(3))
        while clock.now < deadline {
            guard try Self.waitReadable(device, until: deadline) else { break }
            while let count = try buffer.withUnsafeMutableBytes({ try device.read(into: $0) }) {
                let read = Array(buffer[0..<count])
                let matched = try read.withUnsafeBytes { raw -> Bool in
                    let frame = UnsafeRawBufferPointer(rebasing: raw[min(device.vnetHeaderLength, count)...])
                    // Neighbour discovery, MLD and the like also arrive: skip what does not parse or match.
                    guard let packet = try? Packet(frame, linkType: device.mode.linkType) else { return false }
                    if matching(packet) { return true }
                    if let arp = packet.arp, arp.operation == 1, arp.targetIPv4 == proxyIP { try answerArp() }
                    return false
                }
                if matched { return read }
            }
        }
        throw LabError(description: "no \(what) within 3 s on \(device.name) (\(device.counters))")
    }

    private func answerArp() throws {
        let reply = ARPSpec(
            operation: 2, senderMAC: proxyMAC, senderIP: proxyIP, targetMAC: guestMAC, targetIP: guestIP)
        let frame =
            header + PacketBuilder.build(.arp(reply), ethernet: EthernetSpec(destination: guestMAC, source: proxyMAC))
        _ = try frame.withUnsafeBytes { try device.write($0) }
    }

    /// poll(2) for input until `deadline`; false when it passed first.
    static func waitReadable(_ device: TapDevice, until deadline: ContinuousClock.Instant) throws -> Bool {
        let clock = ContinuousClock()
        while true {
            let remaining = clock.now.duration(to: deadline)
            if remaining <= .zero { return false }
            let milliseconds = Int32(
                clamping: remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000
                    + 1)
            var descriptor = pollfd(fd: device.fileDescriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, milliseconds)
            if ready > 0 { return true }
            if ready < 0 && errno != EINTR {
                throw LabError(description: "poll \(device.name): \(String(cString: strerror(errno)))")
            }
        }
    }
}

// MARK: Capabilities on one thread

/// glibc's capset(2) wrapper: a plain system call, so it changes only the calling thread's capabilities (libcap's
/// helpers would broadcast to every thread of the test runner).
private typealias CapabilityCall = @convention(c) (UnsafeMutableRawPointer, UnsafeMutableRawPointer) -> Int32

/// Removes `capability` from the calling thread's effective set.
private func dropEffectiveCapability(_ capability: Int) throws {
    guard let getSymbol = dlsym(nil, "capget"), let setSymbol = dlsym(nil, "capset") else {
        throw LabError(description: "capget/capset not found in the C library")
    }
    let capget = unsafeBitCast(getSymbol, to: CapabilityCall.self)
    let capset = unsafeBitCast(setSymbol, to: CapabilityCall.self)
    // struct __user_cap_header_struct { u32 version (_LINUX_CAPABILITY_VERSION_3); int pid (0: this thread) }
    var header: (UInt32, Int32) = (0x2008_0522, 0)
    // Two struct __user_cap_data_struct { u32 effective, permitted, inheritable } for capabilities 0-31 and 32-63.
    var data: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0, 0, 0)
    let result = withUnsafeMutableBytes(of: &header) { headerBytes in
        withUnsafeMutableBytes(of: &data) { dataBytes -> Int32 in
            guard let headerBase = headerBytes.baseAddress, let dataBase = dataBytes.baseAddress else { return -1 }
            if capget(headerBase, dataBase) != 0 { return -1 }
            let word = capability / 32 * 3  // the effective field of the right data struct
            let effective = dataBytes.load(fromByteOffset: word * 4, as: UInt32.self) & ~(1 << UInt32(capability % 32))
            dataBytes.storeBytes(of: effective, toByteOffset: word * 4, as: UInt32.self)
            return capset(headerBase, dataBase)
        }
    }
    if result != 0 { throw LabError(description: "capset: \(String(cString: strerror(errno)))") }
}

/// Runs `body` on a fresh pthread that ends with it, and returns what it returned or threw.
private func runOnOwnThread(_ body: @escaping @Sendable () throws -> String) throws -> String {
    final class Job: @unchecked Sendable {
        let body: @Sendable () throws -> String
        // Written by the thread, read after pthread_join (which orders the accesses).
        var outcome: Result<String, any Error> = .failure(LabError(description: "thread did not run"))
        init(_ body: @escaping @Sendable () throws -> String) { self.body = body }
    }
    let job = Job(body)
    let context = Unmanaged.passRetained(job).toOpaque()
    var thread = pthread_t()
    let created = pthread_create(
        &thread, nil,
        { context in
            guard let context else { return nil }
            let job = Unmanaged<Job>.fromOpaque(context).takeRetainedValue()
            job.outcome = Result { try job.body() }
            return nil
        }, context)
    if created != 0 {
        Unmanaged<Job>.fromOpaque(context).release()
        throw LabError(description: "pthread_create: \(String(cString: strerror(created)))")
    }
    pthread_join(thread, nil)
    return try job.outcome.get()
}
