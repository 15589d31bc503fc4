import ColoStages
import Testing

@Suite("Object and port specs: parsing and rendering")
struct ObjectSpecTests {
    @Test("filter-mirror with every key, and with defaults")
    func mirror() throws {
        let full = try ObjectSpec.parse(
            "filter-mirror,id=m0,netdev=hn0,outdev=mirror0,queue=tx,status=off,vnet_hdr_support=on,"
                + "position=id=m1,insert=before")
        let expected = MirrorSpec(
            id: "m0",
            attachment: FilterAttachment(
                netdev: "hn0", queue: .tx, status: .off, position: .filter(id: "m1"), insert: .before),
            outdev: "mirror0", vnetHeaderSupport: true)
        #expect(full == .mirror(expected))

        let minimal = try ObjectSpec.parse("filter-mirror,id=m0,netdev=hn0,outdev=mirror0")
        guard case .mirror(let spec) = minimal else {
            Issue.record("expected a mirror, got \(minimal)")
            return
        }
        #expect(spec.attachment == FilterAttachment(netdev: "hn0"), "defaults: queue=all status=on tail behind")
        #expect(spec.attachment.queue == .all && spec.attachment.status == .on)
        #expect(spec.attachment.position == .tail && spec.attachment.insert == .behind)
        #expect(!spec.vnetHeaderSupport)
        #expect(minimal.kind == .mirror && minimal.id == "m0")
    }

    @Test("filter-redirector with indev, outdev or both")
    func redirector() throws {
        let both = try ObjectSpec.parse(
            "filter-redirector,id=r0,netdev=hn0,indev=in0,outdev=out0,queue=rx,status=on,vnet_hdr_support=off,"
                + "position=head,insert=behind")
        #expect(
            both
                == .redirector(
                    RedirectorSpec(
                        id: "r0", attachment: FilterAttachment(netdev: "hn0", queue: .rx, position: .head),
                        indev: "in0", outdev: "out0")))
        let onlyIn = try ObjectSpec.parse("filter-redirector,id=r1,netdev=hn0,indev=in0")
        #expect(
            onlyIn
                == .redirector(
                    RedirectorSpec(id: "r1", attachment: FilterAttachment(netdev: "hn0"), indev: "in0", outdev: nil)))
    }

    @Test("filter-rewriter with every key, and with defaults")
    func rewriter() throws {
        let full = try ObjectSpec.parse(
            "filter-rewriter,id=rew0,netdev=hn0,queue=rx,status=off,vnet_hdr_support=on,position=tail,insert=before")
        #expect(
            full
                == .rewriter(
                    RewriterSpec(
                        id: "rew0",
                        attachment: FilterAttachment(netdev: "hn0", queue: .rx, status: .off, insert: .before),
                        vnetHeaderSupport: true)))
        let minimal = try ObjectSpec.parse("filter-rewriter,id=rew0,netdev=hn0")
        #expect(minimal == .rewriter(RewriterSpec(id: "rew0", attachment: FilterAttachment(netdev: "hn0"))))
    }

    @Test("colo-compare with every key, and with defaults")
    func compare() throws {
        let full = try ObjectSpec.parse(
            "colo-compare,id=c0,primary_in=pri,secondary_in=sec,outdev=out,notify_dev=ctl,iothread=io1,"
                + "compare_timeout=500,expired_scan_cycle=100,max_queue_size=64,vnet_hdr_support=on,"
                + "on_divergence=release"
        )
        #expect(
            full
                == .compare(
                    CompareSpec(
                        id: "c0", primaryIn: "pri", secondaryIn: "sec", outdev: "out", notifyDev: "ctl",
                        iothread: "io1",
                        compareTimeoutMilliseconds: 500, expiredScanCycleMilliseconds: 100, maxQueueSize: 64,
                        vnetHeaderSupport: true, onDivergence: .release)))

        guard
            case .compare(let defaults) = try ObjectSpec.parse(
                "colo-compare,id=c0,primary_in=a,secondary_in=b,outdev=o")
        else {
            Issue.record("expected a compare")
            return
        }
        #expect(defaults.compareTimeoutMilliseconds == 3000)
        #expect(defaults.expiredScanCycleMilliseconds == 1000)
        #expect(defaults.maxQueueSize == 1024)
        #expect(!defaults.vnetHeaderSupport && defaults.notifyDev == nil && defaults.iothread == nil)
        #expect(defaults.onDivergence == .release, "without notify_dev nobody can be asked for a checkpoint")

        guard
            case .compare(let notifying) = try ObjectSpec.parse(
                "colo-compare,id=c0,primary_in=a,secondary_in=b,outdev=o,notify_dev=n")
        else {
            Issue.record("expected a compare")
            return
        }
        #expect(notifying.onDivergence == .checkpoint, "with notify_dev the default is to ask for a checkpoint")
    }

    @Test("conntrack with every key, and with defaults")
    func conntrack() throws {
        let full = try ObjectSpec.parse(
            "conntrack,id=ct0,netdev=hn0,zone=65535,commit=off,queue=tx,status=off,position=head,insert=before")
        #expect(
            full
                == .conntrack(
                    ConntrackSpec(
                        id: "ct0",
                        attachment: FilterAttachment(
                            netdev: "hn0", queue: .tx, status: .off, position: .head, insert: .before),
                        zone: 65535, commit: false)))
        let minimal = try ObjectSpec.parse("conntrack,id=ct0,netdev=hn0")
        #expect(minimal == .conntrack(ConntrackSpec(id: "ct0", attachment: FilterAttachment(netdev: "hn0"))))
        guard case .conntrack(let spec) = minimal else { return }
        #expect(spec.zone == 0 && spec.commit, "defaults: zone 0, commit on")
    }

    @Test("filter-dump with every key, and with defaults")
    func dump() throws {
        let full = try ObjectSpec.parse(
            "filter-dump,id=d0,netdev=hn0,file=/tmp/out.pcap,maxlen=128,queue=rx,status=on,position=tail,insert=behind"
        )
        #expect(
            full
                == .dump(
                    DumpSpec(
                        id: "d0", attachment: FilterAttachment(netdev: "hn0", queue: .rx), file: "/tmp/out.pcap",
                        maxLength: 128)))
        guard case .dump(let spec) = try ObjectSpec.parse("filter-dump,id=d0,netdev=hn0,file=x.pcap") else {
            Issue.record("expected a dump")
            return
        }
        #expect(spec.maxLength == 65536, "QEMU's default snap length")
    }

    @Test("Ports: every kind with every key, and with defaults")
    func ports() throws {
        #expect(
            try PortSpec.parse("tap,id=hn0,ifname=tap0,vnet_hdr=on")
                == .tap(TapPortSpec(id: "hn0", interfaceName: "tap0", vnetHeader: true)))
        #expect(try PortSpec.parse("tap,id=hn0,ifname=tap0") == .tap(TapPortSpec(id: "hn0", interfaceName: "tap0")))
        #expect(try PortSpec.parse("tun,id=t0,ifname=tun0") == .tun(TunPortSpec(id: "t0", interfaceName: "tun0")))
        #expect(
            try PortSpec.parse("socket,id=s0,host=127.0.0.1,port=9003,server=on,vnet_hdr_support=on")
                == .socket(
                    SocketPortSpec(
                        id: "s0", endpoint: .tcp(host: "127.0.0.1", port: 9003), server: true, vnetHeaderSupport: true))
        )
        #expect(
            try PortSpec.parse("socket,id=s1,path=/run/colo/pri.sock,reconnect=5")
                == .socket(SocketPortSpec(id: "s1", endpoint: .unix(path: "/run/colo/pri.sock"), reconnectSeconds: 5)))
        guard case .socket(let client) = try PortSpec.parse("socket,id=s2,host=::1,port=1") else {
            Issue.record("expected a socket")
            return
        }
        #expect(client.endpoint == .tcp(host: "::1", port: 1))
        #expect(!client.server && client.reconnectSeconds == 0 && !client.vnetHeaderSupport)
        #expect(
            try PortSpec.parse("socket,id=s3,host=0.0.0.0,port=0,server=on")
                == .socket(SocketPortSpec(id: "s3", endpoint: .tcp(host: "0.0.0.0", port: 0), server: true)))
        #expect(
            try PortSpec.parse("nfqueue,id=q0,queue=7,fail_open=on,maxlen=4096")
                == .nfqueue(NFQueuePortSpec(id: "q0", queueNumber: 7, failOpen: true, maxLength: 4096)))
        #expect(
            try PortSpec.parse("nfqueue,id=q0")
                == .nfqueue(NFQueuePortSpec(id: "q0", queueNumber: 0, failOpen: false, maxLength: 1024)))
        #expect(
            try PortSpec.parse("pcap,id=p0,file=in.pcapng,mode=read")
                == .pcap(PcapPortSpec(id: "p0", file: "in.pcapng", mode: .read)))
        #expect(try PortSpec.parse("type=pcap,id=p0,file=o,mode=write").kind == .pcap, "type= names the kind")
    }

    @Test("QEMU's documented COLO examples parse")
    func qemuExamples() throws {
        let objects = try [
            "filter-mirror,id=m0,netdev=hn0,queue=tx,outdev=mirror0",
            "filter-redirector,id=redire0,netdev=hn0,queue=rx,indev=redirect0",
            "filter-redirector,netdev=hn0,id=redire1,queue=rx,outdev=compare_out",
            "filter-rewriter,id=rew0,netdev=hn0,queue=all",
            "colo-compare,id=comp0,primary_in=compare0-0,secondary_in=compare1,outdev=compare_out0,iothread=iothread1",
        ].map(ObjectSpec.parse)
        #expect(objects.map(\.id) == ["m0", "redire0", "redire1", "rew0", "comp0"])
        guard case .redirector(let redirector) = objects[2] else {
            Issue.record("expected a redirector")
            return
        }
        #expect(redirector.outdev == "compare_out" && redirector.indev == nil && redirector.attachment.queue == .rx)
        guard case .compare(let compare) = objects[4] else {
            Issue.record("expected a compare")
            return
        }
        #expect(compare.iothread == "iothread1", "accepted and kept for echoing, though unused")

        let ports = try [
            "tap,id=hn0,ifname=tap0", "socket,id=mirror0,host=10.0.0.2,port=9003",
            "socket,id=redirect0,host=127.0.0.1,port=9004,server=on",
            "socket,id=compare_out,path=/run/colo/compare_out.sock",
            "socket,id=compare0-0,path=/run/colo/compare0.sock,server=on",
            "socket,id=compare1,host=0.0.0.0,port=9005,server=on",
            "socket,id=compare_out0,path=/run/colo/compare_out0.sock,server=on",
        ].map(PortSpec.parse)
        #expect(try ObjectSpec.validate(objects: objects, ports: ports).isEmpty, "every name is a declared port")
    }

    @Test("qom-type= gives the kind anywhere in the list")
    func qomType() throws {
        #expect(
            try ObjectSpec.parse("id=m0,qom-type=filter-mirror,netdev=hn0,outdev=o")
                == ObjectSpec.parse("filter-mirror,id=m0,netdev=hn0,outdev=o"))
        #expect(try ObjectSpec.parse("qom-type=filter-rewriter,id=r,netdev=n").kind == .rewriter)
    }

    @Test("A doubled comma is a literal comma in a value")
    func commaEscape() throws {
        let spec = try ObjectSpec.parse("filter-dump,id=d0,netdev=hn0,file=/tmp/a,,b,,,,c.pcap,maxlen=64")
        guard case .dump(let dump) = spec else {
            Issue.record("expected a dump")
            return
        }
        #expect(dump.file == "/tmp/a,b,,c.pcap")
        #expect(dump.maxLength == 64, "the key after the escaped value is still read")
        #expect(spec.specText == "filter-dump,id=d0,netdev=hn0,file=/tmp/a,,b,,,,c.pcap,maxlen=64")

        let trailing = try PortSpec.parse("pcap,id=p0,file=x,,,mode=write")
        #expect(trailing == .pcap(PcapPortSpec(id: "p0", file: "x,", mode: .write)))
        #expect(
            try PortSpec.parse("socket,id=s0,path=/tmp/ü,,é.sock")
                == .socket(SocketPortSpec(id: "s0", endpoint: .unix(path: "/tmp/ü,é.sock"))),
            "non-ASCII text survives splitting")
    }

    @Test("A bare boolean key means on; QEMU's other boolean spellings are taken")
    func bareBooleans() throws {
        guard
            case .mirror(let mirror) = try ObjectSpec.parse("filter-mirror,id=m0,netdev=hn0,outdev=o,vnet_hdr_support")
        else {
            Issue.record("expected a mirror")
            return
        }
        #expect(mirror.vnetHeaderSupport)
        #expect(
            try PortSpec.parse("socket,id=s0,path=/x,server,vnet_hdr_support")
                == .socket(SocketPortSpec(id: "s0", endpoint: .unix(path: "/x"), server: true, vnetHeaderSupport: true))
        )
        #expect(
            try PortSpec.parse("tap,id=t,ifname=tap0,vnet_hdr=yes") == PortSpec.parse("tap,id=t,ifname=tap0,vnet_hdr"))
        #expect(
            try PortSpec.parse("nfqueue,id=q,fail_open=true") == .nfqueue(NFQueuePortSpec(id: "q", failOpen: true)))
        #expect(
            try ObjectSpec.parse("conntrack,id=c,netdev=n,commit=no")
                == ObjectSpec.parse("conntrack,id=c,netdev=n,commit=off"))
    }

    @Test("A single trailing comma is ignored, as QEMU does")
    func trailingComma() throws {
        #expect(
            try ObjectSpec.parse("filter-rewriter,id=r,netdev=n,") == ObjectSpec.parse("filter-rewriter,id=r,netdev=n"))
    }

    @Test("Canonical text: defaults left out, keys in schema order, and it parses back to an equal spec")
    func roundTrip() throws {
        let objectTexts = [
            "filter-mirror,id=m0,netdev=hn0,queue=tx,outdev=mirror0",
            "filter-mirror,id=m0,netdev=hn0,outdev=o,queue=rx,status=off,vnet_hdr_support,position=id=m1,insert=before",
            "filter-redirector,netdev=hn0,id=redire1,queue=rx,outdev=compare_out",
            "filter-redirector,id=r,netdev=hn0,indev=a,outdev=b,vnet_hdr_support=on,position=head",
            "filter-rewriter,id=rew0,netdev=hn0,queue=all",
            "colo-compare,id=comp0,primary_in=compare0-0,secondary_in=compare1,outdev=compare_out0,iothread=iothread1",
            "colo-compare,id=c,primary_in=a,secondary_in=b,outdev=o,notify_dev=n,compare_timeout=1,"
                + "expired_scan_cycle=18446744073709551615,max_queue_size=4294967295,vnet_hdr_support=on,"
                + "on_divergence=release",
            "colo-compare,id=c,primary_in=a,secondary_in=b,outdev=o,on_divergence=checkpoint",
            "conntrack,id=ct,netdev=n,zone=7,commit=off,status=off",
            "filter-dump,id=d,netdev=n,file=a,,b,maxlen=1",
        ]
        for text in objectTexts {
            let spec = try ObjectSpec.parse(text)
            #expect(try ObjectSpec.parse(spec.specText) == spec, "\(text) → \(spec.specText)")
            #expect(spec.description == spec.specText)
        }
        let portTexts = [
            "tap,id=hn0,ifname=tap0,vnet_hdr", "tun,id=t,ifname=tun0",
            "socket,id=s,host=::1,port=0,server=on,vnet_hdr_support=on", "socket,id=s,path=/a,,b,reconnect=3",
            "nfqueue,id=q,queue=65535,fail_open=on,maxlen=1", "pcap,id=p,file=x.pcap,mode=write",
        ]
        for text in portTexts {
            let spec = try PortSpec.parse(text)
            #expect(try PortSpec.parse(spec.specText) == spec, "\(text) → \(spec.specText)")
        }

        #expect(
            try ObjectSpec.parse("filter-redirector,netdev=hn0,id=redire1,queue=rx,outdev=compare_out").specText
                == "filter-redirector,id=redire1,netdev=hn0,outdev=compare_out,queue=rx")
        #expect(
            try ObjectSpec.parse("filter-mirror,id=m0,netdev=hn0,outdev=o,queue=all,status=on,position=tail").specText
                == "filter-mirror,id=m0,netdev=hn0,outdev=o", "defaults are left out")
        #expect(
            try ObjectSpec.parse("colo-compare,id=c,primary_in=a,secondary_in=b,outdev=o,on_divergence=checkpoint")
                .specText == "colo-compare,id=c,primary_in=a,secondary_in=b,outdev=o,on_divergence=checkpoint",
            "on_divergence is kept when it differs from the default notify_dev implies")
        #expect(
            try PortSpec.parse("socket,id=s,port=9000,host=h,server=off,vnet_hdr_support=on").specText
                == "socket,id=s,host=h,port=9000,vnet_hdr_support=on")
    }

    @Test("parse(kind:options:) takes options already split, as a config file gives them")
    func preSplitOptions() throws {
        let spec = try ObjectSpec.parse(
            kind: "filter-dump", options: [("id", "d0"), ("netdev", "hn0"), ("file", "a,b.pcap")])
        #expect(spec == .dump(DumpSpec(id: "d0", attachment: FilterAttachment(netdev: "hn0"), file: "a,b.pcap")))
        #expect(try PortSpec.parse(kind: "tun", options: [("id", "t"), ("ifname", "tun0")]).kind == .tun)
    }

    @Test("Schemas list each kind's keys in message order, with what is required")
    func schemas() {
        #expect(
            ObjectKind.compare.schema.keyNames == [
                "id", "primary_in", "secondary_in", "outdev", "notify_dev", "iothread", "compare_timeout",
                "expired_scan_cycle", "max_queue_size", "vnet_hdr_support", "on_divergence",
            ])
        #expect(
            ObjectKind.mirror.schema.keys.filter(\.isRequired).map(\.name) == ["id", "netdev", "outdev"])
        #expect(PortKind.pcap.schema.keys.filter(\.isRequired).map(\.name) == ["id", "file", "mode"])
        #expect(ObjectKind.allCases.allSatisfy { $0.schema.kind == $0.rawValue })
        #expect(PortKind.allCases.allSatisfy { $0.schema.kind == $0.rawValue })
    }
}
