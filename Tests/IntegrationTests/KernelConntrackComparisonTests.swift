import ColoCLI
import ColoConntrack
import ColoTestSupport
import Foundation
import Testing

/// Our tracker against the Linux kernel's: the same traffic, recorded in a routed namespace lab while the
/// kernel logs its ctstate for every packet (Tools/lab/kernel-conntrack-reference.sh), must get the same
/// new/est/rel/inv/rpl from `colo-proxy conntrack --pcap`.
@Suite("Tracker agrees with the Linux kernel", .serialized)
struct KernelConntrackComparisonTests {
    @Test("Every packet of a real TCP/UDP/ICMP/fragment/IPv6 mix gets the kernel's state")
    func sameStatesAsTheKernel() throws {
        guard Lab.requireRoot() else { return }
        let temporary = try TemporaryDirectory()
        let directory = temporary.path
        let script = Lab.repositoryRoot + "/Tools/lab/kernel-conntrack-reference.sh"
        let recording = try Lab.run(script, [directory], timeoutSeconds: 180)
        try #require(recording.succeeded, "the kernel reference recording failed: \(recording)")

        let tsv = try String(contentsOfFile: directory + "/kernel-states.tsv", encoding: .utf8)
        var expected: [Int: (state: String, direction: String, summary: String)] = [:]
        for line in tsv.split(separator: "\n").dropFirst() {
            let cells = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard cells.count >= 4, let index = Int(cells[0]) else { continue }
            expected[index] = (cells[1], cells[2], cells[3])
        }
        try #require(expected.count > 100, "the reference has only \(expected.count) packets")

        let report = try ConntrackCommand.track(path: directory + "/trace.pcap") { _ in }
        #expect(report.packets == expected.count, "packets in trace.pcap vs kernel-states.tsv")
        var mismatches: [String] = []
        var seen: [String: Int] = [:]
        for index in expected.keys.sorted() {
            guard let kernel = expected[index] else { continue }
            let ours = report.states[index]?.state ?? []
            let want = Self.kernelToOVS(state: kernel.state, direction: kernel.direction)
            seen[want.description, default: 0] += 1
            if ours != want {
                mismatches.append(
                    "#\(index) kernel \(want) ours \(ours) (\(report.states[index]?.invalidReason.map { "\($0)" } ?? "-")): \(kernel.summary)"
                )
            }
        }
        let listing = mismatches.joined(separator: "\n")
        #expect(mismatches.isEmpty, "\(mismatches.count) packets differ from the kernel:\n\(listing)")
        // The mix must really contain every kind of state, or the comparison proves little.
        for state in ["+new+trk", "+est+trk", "+est+rpl+trk", "+rel+trk", "+rel+rpl+trk", "+inv+trk"] {
            #expect(seen[state, default: 0] > 0, "the kernel reference has no \(state) packet: \(seen)")
        }
    }

    /// The kernel's (ctstate, ctdir) in OVS flags. An invalid packet has no connection and so no direction.
    static func kernelToOVS(state: String, direction: String) -> CTState {
        let reply = direction == "reply"
        switch state {
        case "new": return [.new, .tracked]
        case "est": return reply ? [.established, .reply, .tracked] : [.established, .tracked]
        case "rel": return reply ? [.related, .reply, .tracked] : [.related, .tracked]
        default: return [.invalid, .tracked]
        }
    }
}
