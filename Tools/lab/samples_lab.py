#!/usr/bin/env python3
"""Helpers for Tools/record-samples.sh (stdlib only).

  samples_lab.py files DIR [--flip OFFSET]
      write the served files a.txt (20000 bytes) and b.txt (1500 bytes) into
      DIR with a fixed mtime (so Last-Modified is the same in both replicas);
      --flip changes exactly one byte of a.txt at 0-based OFFSET
  samples_lab.py at EPOCH CMD [ARG...]
      sleep until wall-clock time EPOCH (float seconds), then exec CMD: the
      barrier that starts the same client action in both lab copies together;
      fails (exit 3) when it arrives more than 0.2 s after EPOCH
  samples_lab.py udp-echo ADDR PORT SECONDS
      echo datagrams ("echo " + data) until SECONDS have passed
  samples_lab.py udp-client LOCAL LPORT SERVER PORT COUNT
      send COUNT datagrams from LOCAL:LPORT, wait for each echo (3 s timeout)
  samples_lab.py check DIR --mode identical|diverge [--body-offset N]
                 [--http-port P] [--replica-mac M] [--client-mac M]
                 [--summary FILE] [--expected FILE]
      parse DIR/{client,primary,secondary}.pcap and verify what replay will
      see: replica->client TCP byte streams (reassembled by sequence number
      from the SYN|ACK's ISN) equal (identical) or different in exactly one
      byte at headers+N of the first HTTP response (diverge); UDP and ICMP
      datagrams equal; ISNs different. Writes a markdown summary and, for
      diverge, EXPECTED.md. Exit 0 when everything holds, 1 otherwise.
"""
import ipaddress
import os
import socket
import struct
import sys
import time

FIXED_MTIME = 1767225600  # 2026-01-01T00:00:00Z


def die(msg):
    sys.exit("samples_lab.py: " + msg)


# ------------------------------------------------------------------ files --

def file_a():
    lines = []
    n = 0
    i = 1
    while n < 20000:
        line = "colo-proxy sample a.txt line %04d abcdefghijklmnopqrstuvwxyz0123456789\n" % i
        lines.append(line)
        n += len(line)
        i += 1
    return "".join(lines).encode()[:19999] + b"\n"


def file_b():
    lines = []
    for i in range(1, 200):
        lines.append("colo-proxy sample b.txt line %03d keep-alive request\n" % i)
    return "".join(lines).encode()[:1499] + b"\n"


def cmd_files(args):
    d = args[0]
    flip = None
    if len(args) >= 3 and args[1] == "--flip":
        flip = int(args[2])
    a = bytearray(file_a())
    if flip is not None:
        a[flip] = ord("X") if a[flip] != ord("X") else ord("Y")
    os.makedirs(d, exist_ok=True)
    for name, data in (("a.txt", bytes(a)), ("b.txt", file_b())):
        p = os.path.join(d, name)
        with open(p + ".tmp", "wb") as f:
            f.write(data)
        os.utime(p + ".tmp", (FIXED_MTIME, FIXED_MTIME))
        os.replace(p + ".tmp", p)


# ---------------------------------------------------------------- traffic --

def fam(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def cmd_at(args):
    when = float(args[0])
    delay = when - time.time()
    if delay > 30:
        die("start time more than 30 s away")
    if delay < -0.2:
        print("samples_lab.py at: %.3f s late for the barrier" % -delay, file=sys.stderr)
        sys.exit(3)
    if delay > 0:
        time.sleep(delay)
    os.execvp(args[1], args[1:])


def cmd_udp_echo(args):
    addr, port, secs = args[0], int(args[1]), float(args[2])
    s = socket.socket(fam(addr), socket.SOCK_DGRAM)
    s.bind((addr, port))
    deadline = time.monotonic() + secs
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            data, peer = s.recvfrom(2048)
        except TimeoutError:
            break
        s.sendto(b"echo " + data, peer)


def cmd_udp_client(args):
    local, lport, server, port, count = args[0], int(args[1]), args[2], int(args[3]), int(args[4])
    s = socket.socket(fam(local), socket.SOCK_DGRAM)
    s.bind((local, lport))
    s.settimeout(3)
    for i in range(count):
        msg = b"colo sample datagram %d of %d\n" % (i + 1, count)
        s.sendto(msg, (server, port))
        try:
            data, _ = s.recvfrom(2048)
        except TimeoutError:
            die("no UDP echo from %s:%d" % (server, port))
        if data != b"echo " + msg:
            die("wrong UDP echo %r" % data)


# ------------------------------------------------------------------- pcap --

def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        die("%s: too short for a pcap file" % path)
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        die("%s: not a pcap file" % path)
    linktype = struct.unpack(e + "I", data[20:24])[0]
    if linktype != 1:
        die("%s: link type %d, want Ethernet (1)" % (path, linktype))
    off, frames = 24, []
    while off + 16 <= len(data):
        _, _, incl, orig = struct.unpack(e + "IIII", data[off:off + 16])
        off += 16
        frame = data[off:off + incl]
        if incl != orig or len(frame) != incl:
            die("%s: truncated frame %d" % (path, len(frames) + 1))
        frames.append(frame)
        off += incl
    return frames


class Pkt:
    pass


def parse(frame):
    """Ethernet + IPv4/IPv6 + TCP/UDP/ICMP/ICMPv6 (no extension headers)."""
    p = Pkt()
    p.src_mac = frame[6:12]
    etype = struct.unpack("!H", frame[12:14])[0]
    l3 = frame[14:]
    p.proto = None
    if etype == 0x0800:
        ihl = (l3[0] & 15) * 4
        tot = struct.unpack("!H", l3[2:4])[0]
        p.family = "ipv4"
        p.src, p.dst = str(ipaddress.IPv4Address(l3[12:16])), str(ipaddress.IPv4Address(l3[16:20]))
        nh, l4 = l3[9], l3[ihl:tot]
    elif etype == 0x86DD:
        plen = struct.unpack("!H", l3[4:6])[0]
        p.family = "ipv6"
        p.src, p.dst = str(ipaddress.IPv6Address(l3[8:24])), str(ipaddress.IPv6Address(l3[24:40]))
        nh, l4 = l3[6], l3[40:40 + plen]
    else:
        p.proto = "eth-0x%04x" % etype
        return p
    if nh == 6:
        p.proto = "tcp"
        p.sport, p.dport, p.seq, p.ack = struct.unpack("!HHII", l4[:12])
        doff = (l4[12] >> 4) * 4
        p.flags = l4[13]
        p.payload = l4[doff:]
    elif nh == 17:
        p.proto = "udp"
        p.sport, p.dport = struct.unpack("!HH", l4[:4])
        p.payload = l4[8:]
    elif nh in (1, 58):
        p.proto = "icmp" if nh == 1 else "icmpv6"
        p.sport = p.dport = None
        p.icmp_type, p.icmp_code = l4[0], l4[1]
        p.payload = l4  # whole ICMP message (header + body)
    else:
        p.proto = "ip-proto-%d" % nh
    return p


SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10


def ep(addr, port):
    return "[%s]:%d" % (addr, port) if ":" in addr else "%s:%d" % (addr, port)


class Capture:
    def __init__(self, path):
        self.path = path
        self.frames = read_pcap(path)
        self.pkts = [parse(f) for f in self.frames]
        self.tcp = {}    # (src, sport, dst, dport) -> flow dict
        self.dgrams = {}  # (proto, src, sport, dst, dport) -> [payload]
        self.other = []
        for p in self.pkts:
            if p.proto == "tcp":
                k = (p.src, p.sport, p.dst, p.dport)
                fl = self.tcp.setdefault(k, {"isn": None, "segs": [], "packets": 0,
                                             "data_segs": 0, "fin": False, "rst": False,
                                             "sizes": []})
                fl["packets"] += 1
                if p.flags & SYN:
                    fl["isn"] = p.seq
                if p.flags & FIN:
                    fl["fin"] = True
                if p.flags & RST:
                    fl["rst"] = True
                if p.payload:
                    fl["segs"].append((p.seq, p.payload))
                    fl["data_segs"] += 1
                    fl["sizes"].append(len(p.payload))
            elif p.proto in ("udp", "icmp", "icmpv6"):
                k = (p.proto, p.src, p.sport, p.dst, p.dport)
                self.dgrams.setdefault(k, []).append(p.payload)
            else:
                self.other.append(p.proto)

    def stream(self, key):
        """Byte stream of a flow, offset 0 = first byte after the SYN."""
        fl = self.tcp[key]
        if fl["isn"] is None:
            raise ValueError("%s: flow %s has no SYN" % (self.path, key))
        buf = bytearray()
        have = bytearray()
        for seq, data in fl["segs"]:
            off = (seq - fl["isn"] - 1) % (1 << 32)
            end = off + len(data)
            if end > len(buf):
                buf.extend(b"\0" * (end - len(buf)))
                have.extend(b"\0" * (end - len(have)))
            for i, b in enumerate(data):
                if have[off + i] and buf[off + i] != b:
                    raise ValueError("%s: retransmission with different bytes at %d" % (self.path, off + i))
            buf[off:end] = data
            have[off:end] = b"\1" * len(data)
        if 0 in have:
            raise ValueError("%s: hole in stream of %s at %d" % (self.path, key, have.index(0)))
        return bytes(buf)


def flow_name(k):
    return "%s > %s" % (ep(k[0], k[1]), ep(k[2], k[3]))


def dgram_name(k):
    proto, src, sport, dst, dport = k
    if sport is None:
        return "%s %s > %s" % (proto, src, dst)
    return "%s %s > %s" % (proto, ep(src, sport), ep(dst, dport))


def icmp_desc(payload):
    t, c = payload[0], payload[1]
    if t in (0, 8, 128, 129):
        ident, seq = struct.unpack("!HH", payload[4:8])
        return "type %d id 0x%04x seq %d, %d data bytes" % (t, ident, seq, len(payload) - 8)
    return "type %d code %d" % (t, c)


def cmd_check(args):
    d = args[0]
    opts = {"--mode": None, "--body-offset": "5000", "--http-port": "8000",
            "--replica-mac": "52:54:00:00:00:02", "--client-mac": "52:54:00:00:00:01",
            "--summary": None, "--expected": None}
    it = iter(args[1:])
    for a in it:
        if a not in opts:
            die("check: unknown option " + a)
        opts[a] = next(it)
    mode = opts["--mode"]
    if mode not in ("identical", "diverge"):
        die("check: --mode identical|diverge")
    body_off = int(opts["--body-offset"])
    http_port = int(opts["--http-port"])
    rmac = bytes.fromhex(opts["--replica-mac"].replace(":", ""))
    cmac = bytes.fromhex(opts["--client-mac"].replace(":", ""))

    caps = {n: Capture(os.path.join(d, n + ".pcap")) for n in ("client", "primary", "secondary")}
    pri, sec, cli = caps["primary"], caps["secondary"], caps["client"]
    errors = []
    out = []

    def err(msg):
        errors.append(msg)
        print("  FAIL: " + msg)

    for n, c in caps.items():
        mac = cmac if n == "client" else rmac
        bad = sum(1 for p in c.pkts if p.src_mac != mac)
        if bad:
            err("%s.pcap: %d frames not sent by %s" % (n, bad, n))
        if c.other:
            err("%s.pcap: unexpected frames %s" % (n, sorted(set(c.other))))

    # TCP: replica -> client flows
    if set(pri.tcp) != set(sec.tcp):
        err("TCP flows differ: primary %s, secondary %s" % (sorted(pri.tcp), sorted(sec.tcp)))
    http_key = None
    expected_offset = None
    tcp_rows = []
    for k in sorted(pri.tcp):
        if k not in sec.tcp:
            continue
        fp, fs = pri.tcp[k], sec.tcp[k]
        try:
            sp, ss = pri.stream(k), sec.stream(k)
        except ValueError as e:
            err(str(e))
            continue
        if fp["isn"] == fs["isn"]:
            err("%s: same ISN %d in both replicas" % (flow_name(k), fp["isn"]))
        if not (fp["fin"] and fs["fin"]) or fp["rst"] or fs["rst"]:
            err("%s: not closed with FIN in both (fin %s/%s rst %s/%s)"
                % (flow_name(k), fp["fin"], fs["fin"], fp["rst"], fs["rst"]))
        diffs = [i for i in range(min(len(sp), len(ss))) if sp[i] != ss[i]]
        if len(sp) != len(ss):
            err("%s: stream lengths differ: %d vs %d" % (flow_name(k), len(sp), len(ss)))
        row = {"key": k, "isn_p": fp["isn"], "isn_s": fs["isn"], "len": len(sp),
               "pk_p": fp["packets"], "pk_s": fs["packets"],
               "sizes_p": fp["sizes"], "sizes_s": fs["sizes"], "diffs": diffs}
        tcp_rows.append(row)
        print("  tcp %s: ISN primary %d secondary %d (offset secondary-primary %d), "
              "%d stream bytes, data segments %s / %s"
              % (flow_name(k), fp["isn"], fs["isn"],
                 ((fs["isn"] - fp["isn"] + (1 << 31)) % (1 << 32)) - (1 << 31),
                 len(sp), fp["sizes"], fs["sizes"]))
        if k[1] == http_port:
            http_key = k
            hdr_end = sp.find(b"\r\n\r\n")
            if not sp.startswith(b"HTTP/1.") or hdr_end < 0:
                err("%s: stream does not start with an HTTP response" % flow_name(k))
                continue
            hdr_len = hdr_end + 4
            expected_offset = hdr_len + body_off
            row["hdr_len"] = hdr_len
            row["responses"] = sp.count(b"HTTP/1.")
            if ss[:hdr_len] != sp[:hdr_len]:
                err("%s: response headers differ between replicas (Date?)" % flow_name(k))
            if mode == "identical":
                if diffs:
                    err("%s: streams differ at %d byte(s), first at %d" % (flow_name(k), len(diffs), diffs[0]))
            else:
                if diffs != [expected_offset]:
                    err("%s: want exactly one differing byte at %d, got %s"
                        % (flow_name(k), expected_offset, diffs[:10]))
                else:
                    print("  diverge: one byte at stream_offset %d (headers %d + body %d): "
                          "primary %r secondary %r"
                          % (expected_offset, hdr_len, body_off,
                             sp[expected_offset:expected_offset + 1],
                             ss[expected_offset:expected_offset + 1]))
                row["byte_p"] = sp[expected_offset:expected_offset + 1]
                row["byte_s"] = ss[expected_offset:expected_offset + 1]
                row["seg_p"] = seg_at(pri, k, expected_offset)
                row["seg_s"] = seg_at(sec, k, expected_offset)
        elif diffs:
            err("%s: streams differ at %d byte(s)" % (flow_name(k), len(diffs)))
    if http_key is None:
        err("no HTTP flow from port %d in the primary's capture" % http_port)

    # UDP / ICMP datagrams: compared whole (L4 header + payload)
    if set(pri.dgrams) != set(sec.dgrams):
        err("datagram flows differ: primary %s, secondary %s"
            % (sorted(map(dgram_name, pri.dgrams)), sorted(map(dgram_name, sec.dgrams))))
    dg_rows = []
    for k in sorted(pri.dgrams, key=str):
        a, b = pri.dgrams[k], sec.dgrams.get(k, [])
        same = a == b
        if not same:
            err("%s: datagrams differ between replicas" % dgram_name(k))
        descr = [icmp_desc(x) for x in a] if k[0] != "udp" else ["%d bytes" % len(x) for x in a]
        dg_rows.append((k, len(a), len(b), same, descr))
        print("  %s: %d / %d datagrams, %s" % (dgram_name(k), len(a), len(b), "equal" if same else "DIFFERENT"))

    counts = {n: len(c.frames) for n, c in caps.items()}
    sizes = {n: os.path.getsize(c.path) for n, c in caps.items()}
    print("  packets: " + ", ".join("%s %d (%d bytes)" % (n, counts[n], sizes[n]) for n in counts))

    if opts["--summary"]:
        write_summary(opts["--summary"], mode, counts, sizes, tcp_rows, dg_rows, cli,
                      http_key, expected_offset, body_off)
    if mode == "diverge" and opts["--expected"] and http_key and not errors:
        write_expected(opts["--expected"], http_key, tcp_rows, expected_offset, body_off)
    if errors:
        sys.exit(1)


def seg_at(cap, key, off):
    fl = cap.tcp[key]
    for seq, data in fl["segs"]:
        s = (seq - fl["isn"] - 1) % (1 << 32)
        if s <= off < s + len(data):
            return (seq, len(data), s)
    return None


def write_summary(path, mode, counts, sizes, tcp_rows, dg_rows, cli, http_key, expected_offset, body_off):
    L = []
    L.append("| file | packets | bytes |")
    L.append("|---|---|---|")
    for n in ("client", "primary", "secondary"):
        L.append("| `%s/%s.pcap` | %d | %d |" % (mode, n, counts[n], sizes[n]))
    L.append("")
    L.append("Replica → client TCP flows (ISNs are the replicas' SYN|ACK seq numbers; "
             "offset = secondary ISN − primary ISN, what replay must learn):")
    L.append("")
    L.append("| flow | primary ISN | secondary ISN | offset | stream bytes | packets (p/s) | data segment sizes (p / s) |")
    L.append("|---|---|---|---|---|---|---|")
    for r in tcp_rows:
        off = ((r["isn_s"] - r["isn_p"] + (1 << 31)) % (1 << 32)) - (1 << 31)
        L.append("| `%s` | %d | %d | %d | %d | %d / %d | %s / %s |"
                 % (flow_name(r["key"]), r["isn_p"], r["isn_s"], off, r["len"], r["pk_p"], r["pk_s"],
                    compress(r["sizes_p"]), compress(r["sizes_s"])))
    L.append("")
    L.append("Client → replica flows in `client.pcap`: " + ", ".join(
        "`%s` (%d packets)" % (flow_name(k), f["packets"]) for k, f in sorted(cli.tcp.items())) + "; " +
        ", ".join("`%s` (%d)" % (dgram_name(k), len(v)) for k, v in sorted(cli.dgrams.items(), key=str)) + ".")
    L.append("")
    L.append("Replica → client datagrams (compared whole):")
    L.append("")
    for k, na, nb, same, descr in dg_rows:
        L.append("- `%s`: %d / %d, %s (%s)" % (dgram_name(k), na, nb, "equal in both replicas" if same else "DIFFERENT",
                                              "; ".join(sorted(set(descr)))))
    L.append("")
    if mode == "identical":
        L.append("Expected `colo-proxy replay --primary identical/primary.pcap --secondary identical/secondary.pcap "
                 "[--client identical/client.pcap]`: no divergence, exit 0.")
    else:
        r = next(r for r in tcp_rows if r["key"] == http_key)
        L.append("Expected `colo-proxy replay --primary diverge/primary.pcap --secondary diverge/secondary.pcap "
                 "[--client diverge/client.pcap]`: exactly one divergence, `reason: payload`, on TCP flow "
                 "`%s`, `stream_offset` %d (= %d bytes of response headers + body byte %d); exit 1. "
                 "See `diverge/EXPECTED.md`." % (flow_name(http_key), expected_offset, r["hdr_len"], body_off))
    L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def compress(sizes):
    out, i = [], 0
    while i < len(sizes):
        j = i
        while j < len(sizes) and sizes[j] == sizes[i]:
            j += 1
        out.append("%d×%d" % (j - i, sizes[i]) if j - i > 1 else str(sizes[i]))
        i = j
    return ", ".join(out)


def write_expected(path, key, tcp_rows, expected_offset, body_off):
    r = next(r for r in tcp_rows if r["key"] == key)
    src, sport, dst, dport = key
    sp, ss = r["seg_p"], r["seg_s"]
    L = [
        "# Expected replay result for diverge/",
        "",
        "Generated by `Tools/record-samples.sh` from the captures in this directory.",
        "",
        "The secondary served `a.txt` with one byte changed: body byte %d (0-based) is %r in the"
        % (body_off, r["byte_s"].decode()),
        "secondary and %r in the primary. Everything else (second keep-alive response, UDP, ICMP) is equal."
        % r["byte_p"].decode(),
        "",
        "```",
        "reason:        payload",
        "proto:         tcp",
        "family:        %s" % ("ipv6" if ":" in src else "ipv4"),
        "flow:          src %s sport %d > dst %s dport %d   (replica -> client)" % (src, sport, dst, dport),
        "stream_offset: %d" % expected_offset,
        "               = %d bytes of HTTP response headers (as captured) + body offset %d"
        % (r["hdr_len"], body_off),
        "primary byte:  %r (0x%02x)" % (r["byte_p"].decode(), r["byte_p"][0]),
        "secondary byte: %r (0x%02x)" % (r["byte_s"].decode(), r["byte_s"][0]),
        "primary ISN:   %d   secondary ISN: %d   offset (secondary - primary): %d"
        % (r["isn_p"], r["isn_s"], ((r["isn_s"] - r["isn_p"] + (1 << 31)) % (1 << 32)) - (1 << 31)),
        "primary segment holding it:   seq %d len %d (stream offset %d)" % sp,
        "secondary segment holding it: seq %d len %d (stream offset %d; seq - offset = %d)"
        % (ss[0], ss[1], ss[2], (ss[0] - (r["isn_s"] - r["isn_p"])) % (1 << 32)),
        "exit status:   1 (exactly one divergence event)",
        "```",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(L))


def main():
    if len(sys.argv) < 2:
        die("usage: see the docstring")
    cmd, args = sys.argv[1], sys.argv[2:]
    {"files": cmd_files, "at": cmd_at, "udp-echo": cmd_udp_echo,
     "udp-client": cmd_udp_client, "check": cmd_check}.get(cmd, lambda a: die("unknown command " + cmd))(args)


if __name__ == "__main__":
    main()
