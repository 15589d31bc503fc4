import ColoCapture
import ColoPacket
import ColoPorts
import ColoStages

#if canImport(Glibc)
    import Glibc
#endif

/// A `tap` or `tun` port: one TUN/TAP device, frames read straight into store buffers.
public final class DevicePort: FramePort {
    public let id: String
    public let device: TapDevice
    public private(set) var portCounters = PortCounters()
    private var closed = false
    /// The header written in front of every frame sent (when the device has one): zeros, no offloads.
    private let zeroHeader: UnsafeMutableRawPointer
    /// Where a read puts the virtio-net header it splits off (its contents are not carried on this path).
    private let headerScratch: UnsafeMutableRawPointer

    public init(id: String, device: TapDevice) {
        self.id = id
        self.device = device
        headerScratch = .allocate(byteCount: max(16, device.vnetHeaderLength), alignment: 16)
        zeroHeader = .allocate(byteCount: max(16, device.vnetHeaderLength), alignment: 16)
        zeroHeader.initializeMemory(as: UInt8.self, repeating: 0, count: max(16, device.vnetHeaderLength))
    }

    public var linkType: LinkType { device.mode.linkType }

    public func appendPollDescriptors(to descriptors: inout [pollfd]) {
        guard !closed else { return }
        descriptors.append(pollfd(fd: device.fileDescriptor, events: Int16(POLLIN), revents: 0))
    }

    public func receive(into store: PacketStore, limit: Int, now: UInt64, deliver: (PacketRef) -> Void) -> Int {
        guard !closed else { return 0 }
        var delivered = 0
        while delivered < limit {
            guard let ref = store.acquire(length: PacketStore.smallSize) else {
                // Read the frame anyway so the device's queue moves; counted, not processed.
                portCounters.storeFull &+= 1
                var scratch: (UInt64, UInt64) = (0, 0)
                let moved = withUnsafeMutableBytes(of: &scratch) { (try? device.read(into: $0)) ?? nil }
                guard moved != nil else { return delivered }
                continue
            }
            // The virtio-net header carries nothing with offloads off (this path opens devices without them): the
            // read splits it off, so that every stage sees the frame at offset 0; `send` puts a zeroed one back.
            let length: Int?
            do throws(PortError) {
                length = try device.readFrame(
                    header: headerScratch, into: store.buffer(ref),
                    spill: UnsafeMutableRawBufferPointer(start: nil, count: 0))
            } catch {
                portCounters.errors &+= 1
                store.release(ref)
                return delivered
            }
            guard let length else {
                store.release(ref)
                return delivered
            }
            let meta = store.metadata(ref)
            meta.pointee.length = length
            meta.pointee.linkType = device.mode.linkType
            meta.pointee.receivedAt = now
            store.reparse(ref)
            portCounters.framesIn &+= 1
            portCounters.bytesIn &+= UInt64(length)
            delivered += 1
            deliver(ref)
        }
        return delivered
    }

    /// The frame goes out behind an all-zero virtio-net header of the device's length ("no offloads"), or none:
    /// this path opens devices without offloads, and a header from a chardev peer describes another device's.
    public func send(_ frame: UnsafeRawBufferPointer, vnetHeader: UnsafeRawBufferPointer) -> Bool {
        guard !closed else {
            portCounters.sendRefused &+= 1
            return false
        }
        let sent = (try? device.writeFrame(header: zeroHeader, frame)) ?? false
        if sent {
            portCounters.framesOut &+= 1
            portCounters.bytesOut &+= UInt64(frame.count)
        } else {
            portCounters.sendRefused &+= 1
        }
        return sent
    }

    public func service(now: UInt64) {}

    public func close() {
        closed = true
        device.close()
    }

    deinit {
        zeroHeader.deallocate()
        headerScratch.deallocate()
    }
}

/// A `pcap` port: `mode=read` yields a capture's records (as fast as the proxy takes them, then nothing);
/// `mode=write` records every frame sent to it.
public final class PcapPort: FramePort {
    public let id: String
    public let linkType: LinkType
    public private(set) var portCounters = PortCounters()
    private var reader: CaptureReader?
    private let writer: PcapWriter?
    /// Readable at once, always: keeps the loop coming back while records remain.
    private var alwaysReady: Int32 = -1

    public init(spec: PcapPortSpec, linkType: LinkType = .ethernet) throws {
        id = spec.id
        switch spec.mode {
        case .read:
            let reader = try CaptureReader(path: spec.file)
            self.reader = reader
            self.linkType = reader.interfaces.first?.linkType ?? linkType
            writer = nil
            alwaysReady = open("/dev/null", O_RDONLY | O_CLOEXEC)
        case .write:
            reader = nil
            self.linkType = linkType
            writer = try PcapWriter(path: spec.file, linkType: linkType, resolution: .nanoseconds)
        }
    }

    deinit { close() }

    public func appendPollDescriptors(to descriptors: inout [pollfd]) {
        guard reader != nil, alwaysReady >= 0 else { return }
        descriptors.append(pollfd(fd: alwaysReady, events: Int16(POLLIN), revents: 0))
    }

    public func receive(into store: PacketStore, limit: Int, now: UInt64, deliver: (PacketRef) -> Void) -> Int {
        guard let reader else { return 0 }
        var delivered = 0
        while delivered < limit {
            let record: CaptureRecord?
            do throws(CaptureError) {
                record = try reader.next()
            } catch {
                portCounters.errors &+= 1
                self.reader = nil
                return delivered
            }
            guard let record else {
                self.reader = nil
                return delivered
            }
            guard let ref = store.acquire(length: record.bytes.count) else {
                portCounters.storeFull &+= 1
                continue
            }
            store.buffer(ref).copyMemory(from: record.bytes)
            let meta = store.metadata(ref)
            meta.pointee.length = record.bytes.count
            meta.pointee.linkType = record.linkType
            meta.pointee.receivedAt = now
            store.reparse(ref)
            portCounters.framesIn &+= 1
            portCounters.bytesIn &+= UInt64(record.bytes.count)
            delivered += 1
            deliver(ref)
        }
        return delivered
    }

    /// A capture records the frame only (pcap has no place for a virtio-net header).
    public func send(_ frame: UnsafeRawBufferPointer, vnetHeader: UnsafeRawBufferPointer) -> Bool {
        guard let writer else {
            portCounters.sendRefused &+= 1
            return false
        }
        do throws(CaptureError) {
            try writer.write(bytes: frame, timestampNanoseconds: wallClockNanoseconds())
        } catch {
            portCounters.errors &+= 1
            return false
        }
        portCounters.framesOut &+= 1
        portCounters.bytesOut &+= UInt64(frame.count)
        return true
    }

    public func service(now: UInt64) {}

    public func close() {
        reader = nil
        try? writer?.flush()
        if alwaysReady >= 0 {
            Glibc.close(alwaysReady)
            alwaysReady = -1
        }
    }
}
