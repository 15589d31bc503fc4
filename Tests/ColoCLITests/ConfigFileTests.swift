import ColoCLI
import ColoStages
import Foundation
import Testing

@Suite("TOML config files")
struct ConfigFileTests {
    static let configs: String = {
        let parts = #filePath.split(separator: "/").dropLast(3)
        return "/" + parts.joined(separator: "/") + "/Configs"
    }()

    static func exampleFiles() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: configs).filter { $0.hasSuffix(".toml") }.sorted()
    }

    @Test("Every example in Configs/ parses and validates")
    func examples() throws {
        let files = try Self.exampleFiles()
        #expect(files == ["lab.toml", "nfqueue.toml", "two-host-qemu.toml"])
        for file in files {
            let configuration = try RunConfiguration.load(path: Self.configs + "/" + file)
            let channels = try configuration.validate()
            #expect(!configuration.allPorts.isEmpty, "\(file)")
            #expect(configuration.shortcut != nil || !configuration.objects.isEmpty, "\(file) builds a chain")
            #expect(channels.isEmpty, "\(file): every name is a port")
        }
        let lab = try RunConfiguration.load(path: Self.configs + "/lab.toml")
        #expect(lab.shortcut?.primary == .tap(TapPortSpec(id: "p", interfaceName: "colo-p", offload: true)))
        #expect(lab.metrics == "127.0.0.1:9100")
        #expect(lab.resolvedOnDivergence == "release")
        let qemu = try RunConfiguration.load(path: Self.configs + "/two-host-qemu.toml")
        #expect(qemu.objects.map(\.id) == ["to_secondary", "ct0", "comp0"], "array order is chain order")
        #expect(qemu.ports.map(\.id) == ["mirror_in", "secondary_rx", "secondary_tx", "primary_tx", "released"])
    }

    static let full = """
        control = "/tmp/c.sock"
        metrics = "[::1]:9100"
        event_log = "/tmp/e.jsonl"
        divergence_pcap = "/tmp/d.pcap"
        conntrack_events = true
        compare_timeout = 500
        on_divergence = "checkpoint"

        [client]
        kind = "tap"
        ifname = "tc"
        vnet_hdr = true

        [primary]
        kind = "tap"
        ifname = "tp"

        [secondary]
        kind = "tap"
        ifname = "ts"

        [[port]]
        kind = "socket"
        id = "s0"
        path = "/tmp/s0.sock"
        server = false
        reconnect = 2

        [[object]]
        kind = "filter-dump"
        id = "d0"
        netdev = "client"
        file = "/tmp/x.pcap"

        [[object]]
        kind = "filter-mirror"
        id = "m0"
        netdev = "client"
        outdev = "s0"
        """

    @Test("Every key lands in the configuration, typed")
    func fullFile() throws {
        let configuration = try RunConfiguration.parse(Self.full, file: "full.toml")
        #expect(configuration.control == "/tmp/c.sock")
        #expect(configuration.metrics == "[::1]:9100")
        #expect(configuration.eventLog == "/tmp/e.jsonl")
        #expect(configuration.divergencePcap == "/tmp/d.pcap")
        #expect(configuration.conntrackEvents == true)
        #expect(configuration.compareTimeout == 500)
        #expect(configuration.onDivergence == "checkpoint")
        #expect(
            configuration.shortcut?.client == .tap(TapPortSpec(id: "client", interfaceName: "tc", vnetHeader: true)))
        #expect(configuration.ports == [try PortSpec.parse("socket,id=s0,path=/tmp/s0.sock,server=off,reconnect=2")])
        #expect(
            configuration.objects == [
                try ObjectSpec.parse("filter-dump,id=d0,netdev=client,file=/tmp/x.pcap"),
                try ObjectSpec.parse("filter-mirror,id=m0,netdev=client,outdev=s0"),
            ])
        #expect(configuration.allPorts.map(\.id) == ["client", "primary", "secondary", "s0"])
    }

    @Test("The command line overrides the file")
    func merge() throws {
        let file = try RunConfiguration.parse(Self.full, file: "full.toml")
        var flags = RunConfiguration()
        flags.compareTimeout = 100
        flags.controlEnabled = false
        flags.objects = [
            try ObjectSpec.parse("filter-mirror,id=m0,netdev=client,outdev=s0,queue=rx"),
            try ObjectSpec.parse("filter-rewriter,id=rw0,netdev=secondary"),
        ]
        flags.ports = [try PortSpec.parse("tun,id=t0,ifname=tun9")]
        let merged = file.merged(with: flags)
        #expect(merged.compareTimeout == 100)
        #expect(merged.onDivergence == "checkpoint", "not given on the command line: the file's")
        #expect(merged.resolvedControl == nil)
        #expect(merged.objects.map(\.id) == ["d0", "m0", "rw0"])
        #expect(merged.objects[1] == flags.objects[0], "same id: replaced in place")
        #expect(merged.ports.map(\.id) == ["s0", "t0"])
        #expect(merged.shortcut == file.shortcut)
        #expect(RunConfiguration().resolvedControl == "/run/colo-proxy/control.sock")
        #expect(RunConfiguration().resolvedCompareTimeout == 3000)
        try merged.validate()
    }

    @Test(
        "Bad files get one line naming the file, the key and the accepted values",
        arguments: [
            ("colour = 1", "bad.toml: colour: unknown key (accepted: control, no_control, metrics, event_log,"),
            (
                "compare_timeout = 0",
                "bad.toml: compare_timeout: bad value 0 (accepted: a whole number of milliseconds > 0)"
            ),
            ("compare_timeout = \"3s\"", "bad.toml: compare_timeout: bad value '3s' (accepted: a whole number"),
            ("on_divergence = \"panic\"", "bad.toml: on_divergence: bad value 'panic' (accepted: checkpoint, release)"),
            ("metrics = \"localhost:80\"", "bad.toml: metrics: bad metrics address 'localhost:80'"),
            ("conntrack_events = \"yes\"", "bad.toml: conntrack_events: bad value 'yes' (accepted: true, false)"),
            ("control = 5", "bad.toml: control: bad value 5 (accepted: a Unix socket path, as a string)"),
            (
                "[client]\nkind = \"tap\"\nifname = \"a\"",
                "bad.toml: primary: missing: [client], [primary] and [secondary] go together"
            ),
            (
                "[[port]]\nkind = \"tap\"\nid = \"a\"\nifname = \"a\"\n[[port]]\nkind = \"tap\"\nid = \"b\"\nifname = \"b\"\nvnet_hdr = \"maybe\"",
                "bad.toml: port[1].vnet_hdr: tap b: bad value 'maybe' for 'vnet_hdr' (accepted: on, off"
            ),
            (
                "[[port]]\nkind = \"tap\"\nid = \"a\"\nifname = \"a\"\nmtu = 9000",
                "bad.toml: port[0].mtu: tap a: unknown key 'mtu'"
            ),
            ("[[port]]\nid = \"a\"", "bad.toml: port[0].kind: missing (accepted: tap, tun, socket, nfqueue, pcap)"),
            ("[[port]]\nkind = \"veth\"\nid = \"a\"", "bad.toml: port[0].kind: unknown port kind 'veth'"),
            (
                "[[port]]\nkind = \"tap\"\nid = \"a\"\nifname = [\"x\"]",
                "bad.toml: port[0].ifname: bad value (an array)"
            ),
            ("port = 3", "bad.toml: port: must be an array of tables"),
            (
                "[[port]]\nkind = \"tap\"\nid = \"a\"\nifname = \"a\"\n[[object]]\nkind = \"filter-mirror\"\nid = \"m\"\nnetdev = \"a\"\noutdev = \"nowhere\"",
                "bad.toml: filter-mirror m: 'nowhere' for 'outdev' is no declared port"
            ),
            (
                "[[object]]\nkind = \"colo-compare\"\nid = \"c\"\nprimary_in = \"x\"",
                "bad.toml: object[0].secondary_in: colo-compare c: missing required key 'secondary_in'"
            ),
            ("control = ", "bad.toml:1:"),
        ])
    func badFiles(text: String, expected: String) {
        do {
            let configuration = try RunConfiguration.parse(text, file: "bad.toml")
            Issue.record("accepted: \(configuration)")
        } catch {
            #expect(error.description.hasPrefix(expected), "\(error.description)")
            #expect(!error.description.contains("\n"), "one line")
        }
    }

    @Test("Command-line specs become a configuration that merges over a file's")
    func flags() throws {
        let flags = try RunConfiguration.fromFlags(
            ports: ["socket,id=s1,path=/tmp/s1.sock"], objects: ["filter-mirror,id=m0,netdev=client,outdev=s1"],
            client: "tap,id=client,ifname=x0", primary: "tap,id=primary,ifname=x1",
            secondary: "tap,id=secondary,ifname=x2")
        #expect(flags.shortcut?.client == .tap(TapPortSpec(id: "client", interfaceName: "x0")))
        let merged = try RunConfiguration.parse(Self.full, file: "full.toml").merged(with: flags)
        #expect(merged.ports.map(\.id) == ["s0", "s1"])
        #expect(merged.objects.map(\.id) == ["d0", "m0"])
        #expect(merged.objects[1] == flags.objects[0])
        #expect(merged.shortcut == flags.shortcut)
        try merged.validate()

        let cases: [(() throws(FlagError) -> RunConfiguration, String)] = [
            (
                { () throws(FlagError) in
                    try RunConfiguration.fromFlags(
                        ports: ["tap,id=a"], objects: [], client: nil, primary: nil, secondary: nil)
                },
                "--port: tap a: missing required key 'ifname'"
            ),
            (
                { () throws(FlagError) in
                    try RunConfiguration.fromFlags(
                        ports: [], objects: ["filter-mirror,id=m"], client: nil, primary: nil, secondary: nil)
                },
                "--object: filter-mirror m: missing required key"
            ),
            (
                { () throws(FlagError) in
                    try RunConfiguration.fromFlags(
                        ports: [], objects: [], client: "tap,id=c,ifname=c", primary: nil, secondary: nil)
                },
                "--primary: missing: --client, --primary and --secondary go together"
            ),
            (
                { () throws(FlagError) in
                    try RunConfiguration.fromFlags(
                        ports: [], objects: [], client: "tap,id=c,ifname=c", primary: "tap,id=p,ifname=p",
                        secondary: "tapp,id=s")
                },
                "--secondary: unknown port kind 'tapp'"
            ),
        ]
        for (make, expected) in cases {
            do {
                _ = try make()
                Issue.record("accepted, expected \(expected)")
            } catch {
                #expect(error.description.hasPrefix(expected), "\(error.description)")
            }
        }
    }

    @Test func unreadableFile() {
        #expect(throws: ConfigFileError.self) { try RunConfiguration.load(path: "/nonexistent/colo.toml") }
        do {
            _ = try RunConfiguration.load(path: "/nonexistent/colo.toml")
        } catch {
            #expect(error.description.hasPrefix("/nonexistent/colo.toml: cannot read the config file"))
        }
    }
}
