#!/usr/bin/env python3
"""Turn a kernel-conntrack NFLOG capture plus the router's ingress captures
into a per-packet reference (stdlib only).

usage: kernel_reference.py OUTDIR INGRESS.pcap:IFINDEX [INGRESS.pcap:IFINDEX ...]

Reads OUTDIR/nflog.pcap (link type NFLOG, 239; one record per packet that
mangle PREROUTING saw, prefix = the kernel's classification, payload = the IP
packet; for fragments the reassembled datagram) and the Ethernet ingress
captures of the router's interfaces (IFINDEX = the router's ifindex of that
interface, to match NFULA_IFINDEX_INDEV).

Writes OUTDIR/trace.pcap (Ethernet, the original ingress frames in the order
the kernel logged them; all fragments of a datagram, in arrival order, at the
datagram's entry; entries logged "untracked" are left out and counted) and
OUTDIR/kernel-states.tsv (index state direction summary). Fails, listing the
culprits, unless every log entry and every ingress IP packet is matched.
"""
import ipaddress
import struct
import sys
from collections import Counter

LINKTYPE_ETHERNET = 1
LINKTYPE_NFLOG = 239
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_IFINDEX_INDEV = 4

# prefix -> (state, direction); inv has no conntrack entry and therefore no
# direction in the kernel: written as "orig" (OVS sets no rpl bit on +inv).
PREFIXES = {
    "new": ("new", "orig"),
    "est": ("est", "orig"),
    "est-rpl": ("est", "reply"),
    "rel": ("rel", "orig"),
    "rel-rpl": ("rel", "reply"),
    "inv": ("inv", "orig"),
}


def fail(msg):
    sys.exit(f"kernel_reference: error: {msg}")


# ------------------------------------------------------------------- pcap io


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        fail(f"{path}: not a pcap file (too short)")
    magic = data[:4]
    table = {
        b"\xd4\xc3\xb2\xa1": ("<", 1000), b"\xa1\xb2\xc3\xd4": (">", 1000),
        b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1),
    }
    if magic not in table:
        fail(f"{path}: not a classic pcap file (magic {magic.hex()})")
    endian, ns_mult = table[magic]
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    recs, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16
        if off + incl > len(data):
            fail(f"{path}: truncated record {len(recs) + 1}")
        if incl != orig:
            fail(f"{path}: record {len(recs) + 1} was cut by the snap length ({incl} of {orig})")
        recs.append((sec * 1_000_000_000 + frac * ns_mult, data[off:off + incl]))
        off += incl
    return linktype, endian, recs


def write_pcap(path, frames):
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET))
        for ts, frame in frames:
            f.write(struct.pack("<IIII", ts // 1_000_000_000, ts % 1_000_000_000,
                                len(frame), len(frame)))
            f.write(frame)


# ------------------------------------------------------------------- parsing


def parse_nflog(endian, rec, idx):
    if len(rec) < 4:
        fail(f"nflog record {idx}: too short")
    family = rec[0]
    off, tlvs = 4, {}
    while off + 4 <= len(rec):
        tlen, ttype = struct.unpack(endian + "HH", rec[off:off + 4])
        if tlen < 4 or off + tlen > len(rec):
            fail(f"nflog record {idx}: bad TLV length {tlen} at {off}")
        tlvs[ttype & 0x7FFF] = rec[off + 4:off + tlen]
        off += (tlen + 3) & ~3
    if NFULA_PAYLOAD not in tlvs or NFULA_PREFIX not in tlvs:
        fail(f"nflog record {idx}: no payload or no prefix")
    prefix = tlvs[NFULA_PREFIX].split(b"\0", 1)[0].decode()
    indev = struct.unpack("!I", tlvs[NFULA_IFINDEX_INDEV])[0] if NFULA_IFINDEX_INDEV in tlvs else None
    payload = tlvs[NFULA_PAYLOAD]
    if ip_total_len(payload) != len(payload):
        fail(f"nflog record {idx}: payload {len(payload)} bytes but the IP header says "
             f"{ip_total_len(payload)} (truncated copy?)")
    return family, prefix, indev, payload


def ip_total_len(p):
    if len(p) >= 20 and p[0] >> 4 == 4:
        return struct.unpack("!H", p[2:4])[0]
    if len(p) >= 40 and p[0] >> 4 == 6:
        return 40 + struct.unpack("!H", p[4:6])[0]
    return -1


def ip_of_frame(frame):
    """IP packet carried by an Ethernet frame (padding trimmed), or None."""
    if len(frame) < 14:
        return None
    et = struct.unpack("!H", frame[12:14])[0]
    if et not in (0x0800, 0x86DD):
        return None
    p = frame[14:]
    n = ip_total_len(p)
    if n < 0 or n > len(p):
        fail(f"ingress frame with a bad IP length ({n} > {len(p)})")
    return p[:n]


EXT_HDRS = (0, 43, 60)  # hop-by-hop, routing, destination options


def frag_info(p):
    """(key, offset, more, unfrag_len, data) for a fragment, else None.
    key = (version, src, dst, id, upper protocol)."""
    if p[0] >> 4 == 4:
        ihl = (p[0] & 15) * 4
        fl = struct.unpack("!H", p[6:8])[0]
        off, mf = (fl & 0x1FFF) * 8, bool(fl & 0x2000)
        if not off and not mf:
            return None
        ident = struct.unpack("!H", p[4:6])[0]
        return (4, p[12:16], p[16:20], ident, p[9]), off, mf, ihl, p[ihl:]
    nh, pos = p[6], 40
    while nh in EXT_HDRS:
        nh, pos = p[pos], pos + (p[pos + 1] + 1) * 8
    if nh != 44:
        return None
    fnh = p[pos]
    fo = struct.unpack("!H", p[pos + 2:pos + 4])[0]
    ident = struct.unpack("!I", p[pos + 4:pos + 8])[0]
    return (6, p[8:24], p[24:40], ident, fnh), fo & 0xFFF8, bool(fo & 1), pos, p[pos + 8:]


def l4_of(p):
    """(protocol, L4 bytes, src, dst, version) of an unfragmented packet."""
    if p[0] >> 4 == 4:
        ihl = (p[0] & 15) * 4
        return p[9], p[ihl:], ipaddress.ip_address(p[12:16]), ipaddress.ip_address(p[16:20]), 4
    nh, pos = p[6], 40
    while nh in EXT_HDRS:
        nh, pos = p[pos], pos + (p[pos + 1] + 1) * 8
    return nh, p[pos:], ipaddress.ip_address(p[8:24]), ipaddress.ip_address(p[24:40]), 6


def csum16(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def l4_csum_ok(proto, l4, src, dst, ver):
    if proto == 1:
        return csum16(l4) == 0xFFFF
    if proto not in (6, 17, 58):
        return True
    if proto == 17 and ver == 4 and len(l4) >= 8 and l4[6:8] == b"\0\0":
        return True  # no UDP checksum
    if ver == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, proto, len(l4))
    else:
        pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(l4), proto)
    return csum16(pseudo + l4) == 0xFFFF


def ep(addr, port):
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


ICMP4 = {0: "echo-reply", 8: "echo-request", 3: "unreachable", 11: "time-exceeded",
         4: "source-quench", 5: "redirect", 12: "param-problem"}
ICMP4_UNREACH = {0: "net-unreachable", 1: "host-unreachable", 2: "protocol-unreachable",
                 3: "port-unreachable", 4: "frag-needed", 13: "admin-prohibited"}
ICMP6 = {128: "echo-request", 129: "echo-reply", 1: "unreachable", 2: "packet-too-big",
         3: "time-exceeded", 4: "param-problem", 133: "router-solicit", 134: "router-advert",
         135: "neighbor-solicit", 136: "neighbor-advert", 143: "mld2-report"}
ICMP6_UNREACH = {0: "no-route", 1: "admin-prohibited", 3: "addr-unreachable",
                 4: "port-unreachable"}


def summarize(p, nested=False):
    proto, l4, src, dst, ver = l4_of(p)
    if proto == 6 and len(l4) >= 20:
        sport, dport, seq, ack, offx, flags, win = struct.unpack("!HHIIBBH", l4[:16])
        names = "".join(c for bit, c in ((2, "S"), (1, "F"), (4, "R"), (8, "P"), (32, "U"))
                        if flags & bit)
        if flags & 16:
            names += "."
        s = f"tcp {ep(src, sport)} > {ep(dst, dport)} [{names}]"
        if not nested:
            s += f" seq={seq} ack={ack} len={len(l4) - (offx >> 4) * 4}"
    elif proto == 17 and len(l4) >= 8:
        sport, dport = struct.unpack("!HH", l4[:4])
        s = f"udp {ep(src, sport)} > {ep(dst, dport)}"
        if not nested:
            s += f" len={len(l4) - 8}"
    elif proto in (1, 58) and len(l4) >= 8:
        t, code = l4[0], l4[1]
        names, unreach, err = (ICMP4, ICMP4_UNREACH, (3, 4, 5, 11, 12)) if proto == 1 else \
            (ICMP6, ICMP6_UNREACH, (1, 2, 3, 4))
        tname = names.get(t, f"type-{t}")
        if t == err[0] and code in unreach:
            tname = unreach[code]
        s = f"{'icmp' if proto == 1 else 'icmp6'} {src} > {dst} {tname}"
        if (proto == 1 and t in (0, 8)) or (proto == 58 and t in (128, 129)):
            ident, sq = struct.unpack("!HH", l4[4:8])
            s += f" id={ident} seq={sq}"
            if not nested:
                s += f" len={len(l4) - 8}"
        elif t in err and len(l4) > 8 and not nested:
            try:
                s += f" ({summarize(l4[8:], nested=True)})"
            except (IndexError, struct.error):
                s += " (truncated)"
    else:
        s = f"ip proto {proto} {src} > {dst}"
    if not nested and not l4_csum_ok(proto, l4, src, dst, ver):
        s += " bad-csum"
    return s


# ------------------------------------------------------------------- matching


class Ingress:
    def __init__(self, ts, frame, ip, ifindex, src_name, recno):
        self.ts, self.frame, self.ip, self.ifindex = ts, frame, ip, ifindex
        self.where = f"{src_name}#{recno}"
        self.frag = frag_info(ip)
        self.matched = False


def main(argv):
    if len(argv) < 3:
        fail("usage: kernel_reference.py OUTDIR INGRESS.pcap:IFINDEX ...")
    outdir = argv[1]

    lt, endian, nrecs = read_pcap(f"{outdir}/nflog.pcap")
    if lt != LINKTYPE_NFLOG:
        fail(f"nflog.pcap has link type {lt}, expected {LINKTYPE_NFLOG}")
    entries = [parse_nflog(endian, r, i + 1) for i, (_, r) in enumerate(nrecs)]

    ingress, non_ip = [], 0
    for arg in argv[2:]:
        path, _, ifx = arg.rpartition(":")
        lt, _, recs = read_pcap(path)
        if lt != LINKTYPE_ETHERNET:
            fail(f"{path} has link type {lt}, expected Ethernet")
        for i, (ts, frame) in enumerate(recs):
            ip = ip_of_frame(frame)
            if ip is None:
                non_ip += 1
                continue
            ingress.append(Ingress(ts, frame, ip, int(ifx), path.rsplit("/", 1)[-1], i + 1))
    ingress.sort(key=lambda x: x.ts)  # stable: ties keep per-file order

    # Fragment groups in order of their first fragment's arrival.
    groups, by_key = [], {}
    for pkt in ingress:
        if pkt.frag:
            key = (pkt.ifindex,) + pkt.frag[0]
            g = by_key.get(key)
            if g is None or g["done"]:
                g = {"key": key, "frags": [], "done": False, "matched": False}
                by_key[key] = g
                groups.append(g)
            g["frags"].append(pkt)
            # complete when the pieces cover [0, end) and the last one is there
            pieces = sorted((f.frag[1], len(f.frag[4]), f.frag[2]) for f in g["frags"])
            pos, last = 0, False
            for off, ln, mf in pieces:
                if off > pos:
                    break
                pos = max(pos, off + ln)
                last = last or not mf
            else:
                if last and pieces[0][0] == 0:
                    g["done"] = True
                    first = min(g["frags"], key=lambda f: f.frag[1])
                    data = bytearray(pos)
                    for f in g["frags"]:
                        data[f.frag[1]:f.frag[1] + len(f.frag[4])] = f.frag[4]
                    g["unfrag"] = first.ip[:first.frag[3]]
                    g["data"] = bytes(data)

    plain = [p for p in ingress if not p.frag]

    def match_group(payload, indev):
        for g in groups:
            if g["matched"] or not g["done"] or (indev is not None and g["key"][0] != indev):
                continue
            ver, src, dst, ident, proto = g["key"][1:]
            if payload[0] >> 4 != ver:
                continue
            if ver == 4:
                ihl = (payload[0] & 15) * 4
                ok = (payload[12:16] == src and payload[16:20] == dst and payload[9] == proto
                      and struct.unpack("!H", payload[4:6])[0] == ident
                      and payload[ihl:] == g["data"])
            else:
                ul = len(g["unfrag"])
                ok = (payload[8:24] == src and payload[24:40] == dst
                      and payload[ul:] == g["data"] and l4_of(payload)[0] == proto)
            if ok:
                return g
        return None

    out, untracked, unmatched_log = [], 0, []
    cursor = 0  # plain packets before this index are all matched
    for n, (family, prefix, indev, payload) in enumerate(entries, 1):
        hit = None
        while cursor < len(plain) and plain[cursor].matched:
            cursor += 1
        for pkt in plain[cursor:]:
            if not pkt.matched and pkt.ip == payload and (indev is None or pkt.ifindex == indev):
                hit = pkt
                break
        if hit is not None:
            hit.matched = True
            frames = [hit]
        else:
            g = match_group(payload, indev)
            if g is None:
                unmatched_log.append(f"entry {n} [{prefix}] indev={indev}: {summarize(payload)}")
                continue
            g["matched"] = True
            for f in g["frags"]:
                f.matched = True
            frames = g["frags"]
        if prefix == "untracked":
            untracked += len(frames)
            continue
        if prefix not in PREFIXES:
            fail(f"entry {n} logged as '{prefix}', which should never happen: {summarize(payload)}")
        state, direction = PREFIXES[prefix]
        summary = summarize(payload)
        for f in frames:
            s = summary
            if f.frag:
                s += f" frag id={f.frag[0][3]:#x} off={f.frag[1]}{' mf' if f.frag[2] else ''}"
            out.append((f, state, direction, s))

    unmatched_in = [f"{p.where} ifindex={p.ifindex}: {summarize(p.ip) if not p.frag else 'fragment'}"
                    for p in ingress if not p.matched]
    if unmatched_log or unmatched_in:
        msg = []
        if unmatched_log:
            msg.append(f"{len(unmatched_log)} log entries without an ingress packet:\n  "
                       + "\n  ".join(unmatched_log[:30]))
        if unmatched_in:
            msg.append(f"{len(unmatched_in)} ingress IP packets without a log entry:\n  "
                       + "\n  ".join(unmatched_in[:30]))
        fail("\n".join(msg))

    write_pcap(f"{outdir}/trace.pcap", [(f.ts, f.frame) for f, _, _, _ in out])
    with open(f"{outdir}/kernel-states.tsv", "w") as t:
        t.write("index\tstate\tdirection\tsummary\n")
        for i, (_, state, direction, s) in enumerate(out, 1):
            t.write(f"{i}\t{state}\t{direction}\t{s}\n")

    per = Counter(st for _, st, _, _ in out)
    per_dir = Counter(f"{st}{'+rpl' if d == 'reply' else ''}" for _, st, d, _ in out)
    frags = sum(1 for f, _, _, _ in out if f.frag)
    print(f"kernel-conntrack-reference: {len(out)} packets in trace.pcap: "
          + " ".join(f"{k}={per.get(k, 0)}" for k in ("new", "est", "rel", "inv"))
          + " (" + " ".join(f"{k}={v}" for k, v in sorted(per_dir.items())) + f"); "
          f"{frags} of them fragments; left out: {untracked} untracked, {non_ip} non-IP; "
          f"{len(entries)} log entries")


if __name__ == "__main__":
    main(sys.argv)
