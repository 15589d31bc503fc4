import ColoStages
import Testing

/// The message a spec is refused with, or nil when it parses.
private func objectError(_ text: String) -> String? {
    do {
        _ = try ObjectSpec.parse(text)
        return nil
    } catch {
        return error.description
    }
}

private func portError(_ text: String) -> String? {
    do {
        _ = try PortSpec.parse(text)
        return nil
    } catch {
        return error.description
    }
}

private let compareKeys =
    "id, primary_in, secondary_in, outdev, notify_dev, iothread, compare_timeout, expired_scan_cycle, max_queue_size, "
    + "vnet_hdr_support, on_divergence"
private let compareBase = "colo-compare,id=c0,primary_in=a,secondary_in=b,outdev=o"
private let identifierPhrase = "an id: a letter, then letters, digits, '-', '.' or '_'"

@Suite("Object and port specs: one-line errors")
struct ObjectSpecErrorTests {
    static let objectCases: [(String, String)] = [
        ("", "empty object spec (expected KIND,id=ID,key=value,...)"),
        (
            "id=m0,netdev=hn0",
            "missing object kind: start with KIND or give qom-type=KIND (accepted: filter-mirror, filter-redirector, "
                + "filter-rewriter, colo-compare, conntrack, filter-dump)"
        ),
        (
            "filter-mirorr,id=m0",
            "unknown object kind 'filter-mirorr' (accepted: filter-mirror, filter-redirector, filter-rewriter, "
                + "colo-compare, conntrack, filter-dump); did you mean 'filter-mirror'?"
        ),
        (
            "iothread,id=io1",
            "unknown object kind 'iothread' (accepted: filter-mirror, filter-redirector, filter-rewriter, "
                + "colo-compare, conntrack, filter-dump)"
        ),
        (
            compareBase + ",max_queue=5",
            "colo-compare c0: unknown key 'max_queue' (accepted: \(compareKeys))"
        ),
        (
            compareBase + ",compare_timout=5",
            "colo-compare c0: unknown key 'compare_timout' (accepted: \(compareKeys)); did you mean 'compare_timeout'?"
        ),
        ("filter-mirror,id=m0,netdev=hn0", "filter-mirror m0: missing required key 'outdev'"),
        ("filter-mirror,netdev=hn0,outdev=o", "filter-mirror: missing required key 'id'"),
        (
            compareBase + ",on_divergence=fast",
            "colo-compare c0: bad value 'fast' for 'on_divergence' (accepted: checkpoint, release)"
        ),
        (
            compareBase + ",compare_timeout=-5",
            "colo-compare c0: bad value '-5' for 'compare_timeout' (accepted: a whole number of milliseconds > 0)"
        ),
        (
            compareBase + ",compare_timeout=0",
            "colo-compare c0: bad value '0' for 'compare_timeout' (accepted: a whole number of milliseconds > 0)"
        ),
        (
            compareBase + ",expired_scan_cycle=+5",
            "colo-compare c0: bad value '+5' for 'expired_scan_cycle' (accepted: a whole number of milliseconds > 0)"
        ),
        (
            compareBase + ",compare_timeout=18446744073709551616",
            "colo-compare c0: bad value '18446744073709551616' for 'compare_timeout' "
                + "(accepted: a whole number of milliseconds > 0)"
        ),
        (
            compareBase + ",max_queue_size=0",
            "colo-compare c0: bad value '0' for 'max_queue_size' "
                + "(accepted: a whole number of packets from 1 to 4294967295)"
        ),
        ("filter-mirror,id=m0,id=m1,netdev=n,outdev=o", "filter-mirror: duplicate key 'id'"),
        ("filter-mirror,id=m0,netdev=n,outdev=o,queue=rx,queue=tx", "filter-mirror m0: duplicate key 'queue'"),
        ("filter-mirror,id=m0,qom-type=filter-mirror,netdev=n,outdev=o", "filter-mirror m0: duplicate key 'qom-type'"),
        (
            "filter-mirror,id=m0,netdev,outdev=o",
            "filter-mirror m0: key 'netdev' needs a value (accepted: \(identifierPhrase))"
        ),
        (
            "filter-mirror,id=m0,netdev=hn0,outdev=",
            "filter-mirror m0: empty value for 'outdev' (accepted: \(identifierPhrase))"
        ),
        (
            "filter-mirror,id=m0,netdev=hn0,outdev=o,vnet_hdr_support=",
            "filter-mirror m0: empty value for 'vnet_hdr_support' (accepted: on, off)"
        ),
        (
            "filter-mirror,id=0m,netdev=n,outdev=o",
            "filter-mirror: bad value '0m' for 'id' (accepted: \(identifierPhrase))"
        ),
        (
            "filter-mirror,id=m0,netdev=n,outdev=o,queue=both",
            "filter-mirror m0: bad value 'both' for 'queue' (accepted: rx, tx, all)"
        ),
        (
            "filter-mirror,id=m0,netdev=n,outdev=o,status=yes",
            "filter-mirror m0: bad value 'yes' for 'status' (accepted: on, off)"
        ),
        (
            "filter-mirror,id=m0,netdev=n,outdev=o,vnet_hdr_support=maybe",
            "filter-mirror m0: bad value 'maybe' for 'vnet_hdr_support' (accepted: on, off)"
        ),
        (
            "filter-mirror,id=m0,netdev=n,outdev=o,position=middle",
            "filter-mirror m0: bad value 'middle' for 'position' (accepted: head, tail, id=ID)"
        ),
        (
            "filter-mirror,id=m0,netdev=n,outdev=o,insert=after",
            "filter-mirror m0: bad value 'after' for 'insert' (accepted: before, behind)"
        ),
        (
            "filter-mirror,id=m0,netdev=n,outdev=o,,queue=rx",
            "filter-mirror m0: bad value 'o,queue=rx' for 'outdev' (accepted: \(identifierPhrase))"
        ),
        ("filter-mirror,id=m0,netdev=n,outdev=o,=x", "filter-mirror m0: option '=x' has no key"),
        ("filter-mirror,id=m0,vnet_hdr_support,,netdev=n", "filter-mirror m0: empty option (a stray ',')"),
        (
            "filter-redirector,id=r0,netdev=hn0",
            "filter-redirector r0: give indev=, outdev= or both"
        ),
        (
            "filter-redirector,id=r0,netdev=hn0,indev=x,outdev=x",
            "filter-redirector r0: indev and outdev must differ (both 'x')"
        ),
        (
            "colo-compare,id=c0,primary_in=a,secondary_in=a,outdev=o",
            "colo-compare c0: primary_in and secondary_in must differ (both 'a')"
        ),
        (
            "conntrack,id=ct,netdev=n,zone=65536",
            "conntrack ct: bad value '65536' for 'zone' (accepted: a zone number from 0 to 65535)"
        ),
        ("filter-dump,id=d,netdev=n", "filter-dump d: missing required key 'file'"),
        (
            "filter-dump,id=d,netdev=n,file=f,maxlen=0",
            "filter-dump d: bad value '0' for 'maxlen' (accepted: a whole number of bytes from 1 to 4294967295)"
        ),
    ]

    @Test("Each malformed --object gets its exact message", arguments: objectCases)
    func objectMessages(text: String, message: String) {
        #expect(objectError(text) == message, "for \(text)")
    }

    static let portCases: [(String, String)] = [
        ("", "empty port spec (expected KIND,id=ID,key=value,...)"),
        (
            "tapp,id=t",
            "unknown port kind 'tapp' (accepted: tap, tun, socket, nfqueue, pcap); did you mean 'tap'?"
        ),
        (
            "id=t,ifname=tap0",
            "missing port kind: start with KIND or give type=KIND (accepted: tap, tun, socket, nfqueue, pcap)"
        ),
        (
            "socket,id=p0,path=/x,host=h,port=1",
            "socket p0: give either path= or host= and port=, not both"
        ),
        ("socket,id=p0,path=/x,port=1", "socket p0: give either path= or host= and port=, not both"),
        ("socket,id=p0", "socket p0: give either path= or host= and port="),
        ("socket,id=p0,host=h", "socket p0: missing required key 'port'"),
        ("socket,id=p0,port=9", "socket p0: missing required key 'host'"),
        (
            "socket,id=p0,host=h,port=0",
            "socket p0: bad value '0' for 'port' "
                + "(accepted: a TCP port from 1 to 65535 (0 with server=on: any free port))"
        ),
        (
            "socket,id=p0,host=h,port=65536",
            "socket p0: bad value '65536' for 'port' "
                + "(accepted: a TCP port from 1 to 65535 (0 with server=on: any free port))"
        ),
        (
            "socket,id=p0,host=h,port=9,server=on,reconnect=2",
            "socket p0: reconnect= needs server=off (a server waits for its peer)"
        ),
        (
            "socket,id=p0,host=a b,port=9",
            "socket p0: bad value 'a b' for 'host' (accepted: a host name or IP address)"
        ),
        (
            "socket,id=p0,path=/" + String(repeating: "x", count: 107),
            "socket p0: bad value '/\(String(repeating: "x", count: 107))' for 'path' "
                + "(accepted: a Unix socket path of at most 107 bytes)"
        ),
        (
            "socket,id=p0,path=/x,reconnect=-1",
            "socket p0: bad value '-1' for 'reconnect' (accepted: a whole number of seconds (0: never))"
        ),
        (
            "socket,id=p0,path",
            "socket p0: key 'path' needs a value (accepted: a Unix socket path of at most 107 bytes)"
        ),
        ("tap,id=t0", "tap t0: missing required key 'ifname'"),
        (
            "tap,id=t0,ifname=averyveryverylongname",
            "tap t0: bad value 'averyveryverylongname' for 'ifname' "
                + "(accepted: an interface name of 1 to 15 bytes without '/', ':' or spaces)"
        ),
        (
            "tun,id=t0,ifname=a/b",
            "tun t0: bad value 'a/b' for 'ifname' "
                + "(accepted: an interface name of 1 to 15 bytes without '/', ':' or spaces)"
        ),
        (
            "tun,id=t0,ifname=tun0,vnet_hdr=on",
            "tun t0: unknown key 'vnet_hdr' (accepted: id, ifname)"
        ),
        (
            "nfqueue,id=q0,queue=70000",
            "nfqueue q0: bad value '70000' for 'queue' (accepted: a queue number from 0 to 65535)"
        ),
        (
            "nfqueue,id=q0,fail_open=sometimes",
            "nfqueue q0: bad value 'sometimes' for 'fail_open' (accepted: on, off)"
        ),
        ("pcap,id=p0,file=x", "pcap p0: missing required key 'mode'"),
        ("pcap,id=p0,file=x,mode=append", "pcap p0: bad value 'append' for 'mode' (accepted: read, write)"),
        ("pcap,id=p0,file=x,mode=read,type=pcap", "pcap p0: duplicate key 'type'"),
    ]

    @Test("Each malformed --port gets its exact message", arguments: portCases)
    func portMessages(text: String, message: String) {
        #expect(portError(text) == message, "for \(text)")
    }

    @Test("Errors are typed: the subject, key and value are fields, not only text")
    func typedError() {
        #expect(throws: ObjectSpecError.missingKey(.init(kind: "filter-mirror", id: "m0"), key: "outdev")) {
            try ObjectSpec.parse("filter-mirror,id=m0,netdev=hn0")
        }
        #expect(
            throws: ObjectSpecError.badValue(
                .init(kind: "pcap", id: "p"), key: "mode", value: "x", accepted: "read, write")
        ) {
            try PortSpec.parse("pcap,id=p,file=f,mode=x")
        }
    }

    @Test("Every message is one line")
    func oneLine() {
        let messages = (Self.objectCases + Self.portCases).map(\.1)
        #expect(messages.allSatisfy { !$0.contains("\n") })
    }
}
