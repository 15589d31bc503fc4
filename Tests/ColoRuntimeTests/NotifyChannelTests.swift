import ColoPacket
import ColoPorts
import ColoRuntime
import ColoStages
import Foundation
import Testing

/// colo-compare's `notify_dev` (WIRE.md §1): the Xen-style checkpoint controller on a socket port.
@Suite("colo-compare notify_dev: the checkpoint channel")
struct NotifyChannelTests {
    static func message(_ text: String) -> [UInt8] {
        let bytes = Array(text.utf8)
        let length = UInt32(bytes.count)
        return [UInt8(length >> 24), UInt8((length >> 16) & 0xFF), UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF)]
            + bytes
    }

    @Test("init handshake, DO_CHECKPOINT on divergence, COLO_CHECKPOINT releases what was held")
    func checkpointRound() throws {
        let path = socketPath("notify")
        let specs = try [
            "socket,id=pin,path=/unused/pin,server=on", "socket,id=sin,path=/unused/sin,server=on",
            "socket,id=out,path=/unused/out,server=on", "socket,id=ctl,path=\(path),server=on",
        ].map { try PortSpec.parse($0) }
        let memory = ["pin", "sin", "out"].map { MemoryPort($0) }
        guard case .socket(let notifySpec) = specs[3] else { return }
        let notify = try ColoRuntime.SocketPort(spec: notifySpec)
        let proxy = try GraphProxy(
            ports: memory + [notify], portSpecs: specs,
            objects: [
                try ObjectSpec.parse(
                    "colo-compare,id=cmp,primary_in=pin,secondary_in=sin,outdev=out,notify_dev=ctl,compare_timeout=200,expired_scan_cycle=50"
                )
            ])
        let thread = Thread { proxy.run() }
        thread.start()
        defer {
            proxy.stop()
            while !thread.isFinished { usleep(5_000) }
        }
        let controller = try Peer.unix(path)
        controller.write(Self.message("COLO_USERSPACE_PROXY_INIT"))
        let reply = Self.message("COLO_COMPARE_GET_XEN_INIT")
        #expect(controller.read(reply.count) == reply)

        // The replicas answer differently: the primary's datagram is held (notify_dev: on_divergence=checkpoint)
        // and the controller is asked for a checkpoint.
        let primary = udp("primary says", port: 77)
        memory[0].push(primary)
        memory[1].push(udp("secondary says", port: 77))
        let request = Self.message("DO_CHECKPOINT")
        #expect(controller.read(request.count, timeout: 3) == request)
        #expect(memory[2].sent.isEmpty)

        controller.write(Self.message("COLO_CHECKPOINT"))
        for _ in 0..<200 where memory[2].sent.isEmpty { usleep(10_000) }
        #expect(memory[2].sent == [primary])
        #expect(proxy.perform { $0.comparers[0].counters.checkpoints } == 1)
    }
}
