import ArgumentParser
import ColoCLI
import Testing

@Suite("run: TAP offload=")
struct RunOffloadTests {
    static func validationMessage(_ arguments: [String]) -> String? {
        do {
            try RunCommand.parse(arguments).validate()
            return nil
        } catch {
            return RunCommand.message(for: error)
        }
    }

    @Test("offload=on on all three shortcut TAPs is accepted; a mix names the key and the accepted values")
    func shortcut() {
        let on = [
            "--client", "tap,id=c,ifname=tc0,offload=on", "--primary", "tap,id=p,ifname=tp0,offload=on",
            "--secondary", "tap,id=s,ifname=ts0,offload=on",
        ]
        #expect(Self.validationMessage(on) == nil)
        var mixed = on
        mixed[5] = "tap,id=s,ifname=ts0"
        let message = Self.validationMessage(mixed) ?? ""
        #expect(message.contains("offload") && message.contains("on or off"), "\(message)")
        var bad = on
        bad[1] = "tap,id=c,ifname=tc0,offload=fast"
        let badMessage = Self.validationMessage(bad) ?? ""
        #expect(badMessage.contains("offload") && badMessage.contains("on"), "\(badMessage)")
    }

    @Test("offload=on outside the three-TAP shortcut is refused with a line that says where it works")
    func graph() {
        let message =
            Self.validationMessage([
                "--port", "tap,id=c,ifname=tc0,offload=on", "--port", "pcap,id=out,file=/tmp/x.pcap,mode=write",
                "--object", "filter-mirror,id=m0,netdev=c,queue=tx,outdev=out",
            ]) ?? ""
        #expect(message.contains("offload=on") && message.contains("shortcut"), "\(message)")
    }
}
