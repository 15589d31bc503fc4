import ColoStages
import Testing

/// Parses the texts (they are known good) and validates the set; returns the error message or nil.
private func validationError(objects: [String], ports: [String]) throws -> String? {
    let objectSpecs = try objects.map(ObjectSpec.parse)
    let portSpecs = try ports.map(PortSpec.parse)
    do {
        try ObjectSpec.validate(objects: objectSpecs, ports: portSpecs)
        return nil
    } catch {
        return error.description
    }
}

@Suite("Object and port specs: validating a whole set")
struct ObjectSpecValidationTests {
    /// The primary host of QEMU's COLO example, with the chardev pairs as ports.
    static let primaryPorts = [
        "tap,id=hn0,ifname=tap0", "socket,id=mirror0,host=10.0.0.2,port=9003",
        "socket,id=compare_out,path=/run/a.sock", "socket,id=compare0,path=/run/b.sock",
        "socket,id=compare0-0,path=/run/b.sock,server=on", "socket,id=compare1,host=0.0.0.0,port=9004,server=on",
        "socket,id=compare_out0,path=/run/a.sock,server=on",
    ]
    static let primaryObjects = [
        "filter-mirror,id=m0,netdev=hn0,queue=tx,outdev=mirror0",
        "filter-redirector,netdev=hn0,id=redire0,queue=rx,indev=compare_out",
        "filter-redirector,netdev=hn0,id=redire1,queue=rx,outdev=compare0",
        "colo-compare,id=comp0,primary_in=compare0-0,secondary_in=compare1,outdev=compare_out0,iothread=iothread1",
    ]

    @Test("QEMU's primary-side example validates with every name a port")
    func qemuPrimary() throws {
        #expect(try validationError(objects: Self.primaryObjects, ports: Self.primaryPorts) == nil)
    }

    @Test("An outdev that names no port is a channel to the one stage that reads it")
    func internalChannels() throws {
        let objects = try [
            "filter-mirror,id=m0,netdev=client,queue=tx,outdev=to_secondary",
            "filter-redirector,id=r0,netdev=secondary,queue=rx,indev=to_secondary",
            "filter-redirector,id=r1,netdev=primary,queue=tx,outdev=pri_out",
            "filter-redirector,id=r2,netdev=secondary,queue=tx,outdev=sec_out",
            "colo-compare,id=c0,primary_in=pri_out,secondary_in=sec_out,outdev=released",
            "filter-redirector,id=r3,netdev=client,queue=rx,indev=released",
        ].map(ObjectSpec.parse)
        let ports = try ["tap,id=client,ifname=c0", "tap,id=primary,ifname=p0", "tap,id=secondary,ifname=s0"]
            .map(PortSpec.parse)
        let channels = try ObjectSpec.validate(objects: objects, ports: ports)
        #expect(channels.map(\.name) == ["to_secondary", "pri_out", "sec_out", "released"])
        #expect(channels[0].writers == [InternalChannel.End(objectID: "m0", key: "outdev")])
        #expect(channels[0].reader == InternalChannel.End(objectID: "r0", key: "indev"))
        #expect(channels[1].reader == InternalChannel.End(objectID: "c0", key: "primary_in"))
        #expect(channels[3].writers == [InternalChannel.End(objectID: "c0", key: "outdev")])
    }

    @Test("Ids are unique across ports and objects")
    func duplicateIDs() throws {
        #expect(
            try validationError(objects: ["filter-rewriter,id=hn0,netdev=hn0"], ports: ["tap,id=hn0,ifname=tap0"])
                == "duplicate id 'hn0': used by tap and by filter-rewriter")
        #expect(
            try validationError(
                objects: ["filter-rewriter,id=r,netdev=hn0", "conntrack,id=r,netdev=hn0"],
                ports: ["tap,id=hn0,ifname=t"])
                == "duplicate id 'r': used by filter-rewriter and by conntrack")
        #expect(
            try validationError(objects: [], ports: ["tap,id=a,ifname=t0", "tun,id=a,ifname=t1"])
                == "duplicate id 'a': used by tap and by tun")
    }

    @Test("Each bad reference names the object, the key and the name")
    func badReferences() throws {
        let ports = ["tap,id=hn0,ifname=tap0", "socket,id=s0,path=/s"]
        let cases: [([String], String)] = [
            (
                ["filter-mirror,id=m0,netdev=hn9,outdev=s0"],
                "filter-mirror m0: unknown port 'hn9' for 'netdev' (declared ports: hn0, s0)"
            ),
            (
                ["colo-compare,id=c0,primary_in=hn0,secondary_in=nowhere,outdev=s0"],
                "colo-compare c0: unknown port or channel 'nowhere' for 'secondary_in' "
                    + "(declared ports: hn0, s0; channels written by an outdev: none)"
            ),
            (
                ["filter-mirror,id=m0,netdev=hn0,outdev=mirror1"],
                "filter-mirror m0: 'mirror1' for 'outdev' is no declared port, and no indev, primary_in or "
                    + "secondary_in reads it as a channel (declared ports: hn0, s0)"
            ),
            (
                [
                    "filter-mirror,id=m0,netdev=hn0,outdev=ch", "filter-redirector,id=r0,netdev=hn0,indev=ch",
                    "filter-redirector,id=r1,netdev=hn0,indev=ch",
                ],
                "filter-redirector r1: channel 'ch' for 'indev' is already read by filter-redirector r0 'indev'"
            ),
            (
                ["filter-rewriter,id=rw,netdev=hn0", "filter-mirror,id=m0,netdev=hn0,outdev=rw"],
                "filter-mirror m0: 'rw' for 'outdev' names filter-rewriter rw, not a port"
            ),
            (
                ["filter-rewriter,id=rw,netdev=hn0", "filter-rewriter,id=rw2,netdev=rw"],
                "filter-rewriter rw2: 'rw' for 'netdev' names filter-rewriter rw, not a port"
            ),
            (
                ["colo-compare,id=c0,primary_in=hn0,secondary_in=s0,outdev=hn0,notify_dev=hn0"],
                "colo-compare c0: 'hn0' for 'notify_dev' names a tap port (accepted: a socket port)"
            ),
            (
                ["colo-compare,id=c0,primary_in=hn0,secondary_in=s0,outdev=hn0,notify_dev=ctl"],
                "colo-compare c0: unknown port 'ctl' for 'notify_dev' (declared ports: hn0, s0)"
            ),
            (
                ["filter-mirror,id=m0,netdev=hn0,outdev=s0,position=id=m9"],
                "filter-mirror m0: 'id=m9' for 'position' names no filter "
                    + "(accepted: head, tail, id=ID of a filter on hn0)"
            ),
            (
                ["filter-mirror,id=m0,netdev=hn0,outdev=s0,position=id=m0"],
                "filter-mirror m0: 'id=m0' for 'position' names this filter itself "
                    + "(accepted: head, tail, id=ID of another filter)"
            ),
            (
                ["filter-rewriter,id=rw,netdev=s0", "filter-mirror,id=m0,netdev=hn0,outdev=s0,position=id=rw"],
                "filter-mirror m0: 'id=rw' for 'position' names a filter on netdev s0, not hn0"
            ),
            (
                ["colo-compare,id=c0,primary_in=hn0,secondary_in=s0,outdev=hn0,vnet_hdr_support=on"],
                "colo-compare c0: vnet_hdr_support=on, but socket port 's0' (its 'secondary_in') frames without the"
                    + " V field; the framing is set on the port: add vnet_hdr_support=on to socket port s0"
            ),
        ]
        for (objects, message) in cases {
            #expect(try validationError(objects: objects, ports: ports) == message, "for \(objects)")
        }
        #expect(
            try validationError(
                objects: [
                    "filter-rewriter,id=rw,netdev=hn0", "filter-mirror,id=m0,netdev=hn0,outdev=s0,position=id=rw",
                ],
                ports: ports) == nil, "position=id= on the same netdev is fine")
        #expect(
            try validationError(
                objects: ["filter-mirror,id=m0,netdev=s0,outdev=v0,vnet_hdr_support=on"],
                ports: ports + ["socket,id=v0,path=/v,vnet_hdr_support=on"]) == nil,
            "a vnet_hdr_support filter whose socket port has it too (its netdev is no chardev: not checked)")
    }

    @Test("Specs built in code meet the same per-key rules as parsed ones")
    func builtInCode() {
        let compare = CompareSpec(
            id: "c0", primaryIn: "a", secondaryIn: "b", outdev: "o", compareTimeoutMilliseconds: 0)
        #expect(throws: ObjectSpecError.self) {
            try ObjectSpec.validate(objects: [.compare(compare)], ports: [])
        }
        do {
            try ObjectSpec.validate(objects: [.compare(compare)], ports: [])
        } catch {
            #expect(
                error.description
                    == "colo-compare c0: bad value '0' for 'compare_timeout' "
                    + "(accepted: a whole number of milliseconds > 0)"
            )
        }
    }
}
