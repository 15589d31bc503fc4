import ColoPorts
import ColoRuntime
import ColoStages
import ColoTestSupport
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Two namespaces joined only through the proxy: one TAP with a virtio-net header, one without, and a redirector
/// each way. A ping that crosses proves frames are re-framed intact in both directions.
@Suite("tap ports with and without vnet_hdr")
struct VnetHeaderLabTests {
    @Test("ping across a vnet_hdr=on TAP and a plain one, redirected both ways")
    func pingAcross() throws {
        guard Lab.requireRoot() else { return }
        let tag = "\(getpid() % 100_000)"
        let names = ("vna-\(tag)", "vnb-\(tag)")
        let specs = try ["tap,id=a,ifname=va\(tag),vnet_hdr=on", "tap,id=b,ifname=vb\(tag)"].map {
            try PortSpec.parse($0)
        }
        var ports: [any FramePort] = []
        for spec in specs {
            guard case .tap(let tap) = spec else { continue }
            let device = try TapDevice(name: tap.interfaceName, mode: .tap, vnetHeader: tap.vnetHeader)
            ports.append(DevicePort(id: tap.id, device: device))
        }
        let proxy = try GraphProxy(
            ports: ports, portSpecs: specs,
            objects: try [
                "filter-redirector,id=ab,netdev=a,queue=tx,outdev=b",
                "filter-redirector,id=ba,netdev=b,queue=tx,outdev=a",
            ].map { try ObjectSpec.parse($0) })
        let thread = Thread { proxy.run() }
        thread.start()
        defer {
            proxy.stop()
            while !thread.isFinished { usleep(10_000) }
            for name in [names.0, names.1] { _ = try? Command.run(["ip", "netns", "del", name]) }
        }
        for (index, (namespace, device)) in [(names.0, "va\(tag)"), (names.1, "vb\(tag)")].enumerated() {
            _ = try? Command.run(["ip", "netns", "del", namespace])
            try Command.mustRun(["ip", "netns", "add", namespace])
            try Command.mustRun(["ip", "link", "set", device, "netns", namespace])
            try Command.mustRun(["ip", "-n", namespace, "addr", "add", "10.77.0.\(index + 1)/24", "dev", device])
            try Command.mustRun(["ip", "-n", namespace, "link", "set", device, "up"])
        }
        let ping = try Command.run(
            ["ip", "netns", "exec", names.0, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.0.2"], timeout: 15)
        #expect(ping.succeeded, "\(ping)")
        #expect(ping.output.contains("3 received"), "\(ping)")
        // Frames written before the far interface was up are refused (EIO) and counted; the echoes all went out.
        let written = proxy.perform { proxy in proxy.ports.map { $0.portCounters.framesOut } }
        #expect((written ?? []).allSatisfy { $0 >= 3 }, "\(String(describing: written))")
    }
}
