import ColoPacket
import ColoPacketBuilder
import ColoStages
import Testing

/// Fragments whose datagram never completes go on, once the front end gives up on them, to where a whole packet
/// from the same place would have gone: not to wherever their source field points.
@Suite("Pipeline: expired fragments")
struct PipelineFragmentExpiryTests {
    /// The first fragment of a 3000-byte UDP datagram from the client (the rest never comes).
    static func firstClientFragment() -> [UInt8] {
        var ip = IPv4Spec(source: IPv4Address(10, 10, 0, 1), destination: IPv4Address(10, 10, 0, 2))
        ip.dontFragment = false
        ip.identification = 0x4242
        let datagram = PacketBuilder.ipv4(
            ip, .udp(UDPSpec(sourcePort: 5000, destinationPort: 53, payload: bytes(3000))))
        let first = PacketBuilder.fragmentIPv4(datagram, maxPayload: 1480)[0]
        return PacketBuilder.build(.other(etherType: EtherType.ipv4, bytes: first))
    }

    @Test("An incomplete client datagram's fragment goes to the primary and its copy to the secondary")
    func clientFragment() {
        let h = PipelineHarness()
        let fragment = Self.firstClientFragment()
        h.fromClient(fragment)
        #expect(h.primary.isEmpty && h.secondary.isEmpty, "held while the datagram may still complete")
        h.advance(16_000 * ms)
        #expect(h.primary == [fragment])
        #expect(h.secondary == [fragment], "the mirror copy is input to the secondary, not its output")
        #expect(h.client.isEmpty)
        #expect(h.events.isEmpty)
        #expect(h.pipeline.comparer.queuedPackets.secondary == 0, "nothing queued as if the secondary had sent it")
        #expect(h.store.inUse == 0)
    }

    @Test("After failover an incomplete client datagram's fragment goes to the secondary only")
    func clientFragmentAfterFailover() {
        let h = PipelineHarness()
        h.pipeline.failover(now: h.now)
        h.collect()
        let fragment = Self.firstClientFragment()
        h.fromClient(fragment)
        h.advance(16_000 * ms)
        #expect(h.primary.isEmpty, "the primary is lost")
        #expect(h.secondary == [fragment])
        #expect(h.store.inUse == 0)
    }

    @Test("An incomplete datagram from the secondary goes to colo-compare as the secondary's output")
    func secondaryFragment() {
        let h = PipelineHarness()
        var ip = IPv4Spec(source: IPv4Address(10, 10, 0, 2), destination: IPv4Address(10, 10, 0, 1))
        ip.dontFragment = false
        let datagram = PacketBuilder.ipv4(
            ip, .udp(UDPSpec(sourcePort: 53, destinationPort: 5000, payload: bytes(3000))))
        let first = PacketBuilder.build(
            .other(etherType: EtherType.ipv4, bytes: PacketBuilder.fragmentIPv4(datagram, maxPayload: 1480)[0]))
        h.fromSecondary(first)
        h.advance(16_000 * ms)
        #expect(h.secondary.isEmpty && h.primary.isEmpty && h.client.isEmpty, "output, not input to a replica")
        #expect(h.store.inUse == 1, "held by colo-compare for the primary's counterpart")
    }
}
