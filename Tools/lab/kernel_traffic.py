#!/usr/bin/env python3
"""Traffic helpers for Tools/lab/kernel-conntrack-reference.sh (stdlib only).

Server side (run in the server namespace, exits by itself after --seconds):
  kernel_traffic.py serve [--seconds N]
      dual-stack ([::], v4-mapped too) listeners:
      tcp 8001, 8003, 8004  echo (each connection: echo until EOF)
      tcp 8002              send 3000 bytes, wait 0.3 s, reset (SO_LINGER 0)
      udp 7000              echo; a datagram starting with b"twice" is
                            answered twice, the second time 0.3 s later

Client side (run in the client namespace; exit status 0 only when the
exchange went as intended; every socket operation has a timeout):
  tcp-closed HOST PORT   connect to a closed port, expect RST (refused)
  tcp-reset HOST PORT    request, read data, expect the server's reset
  tcp-echo HOST PORT     one echo exchange and an orderly close
  udp HOST PORT          two echo exchanges, then "twice" and close the
                         socket before the second answer: the client
                         kernel answers it with ICMP port unreachable
  udp-closed HOST PORT   datagram to a closed port, expect ICMP unreachable
  oow-ack HOST PORT      established echo connection; inject (raw socket)
                         a bare ACK whose seq is 2^30 past snd_nxt, then
                         finish the exchange and close normally
  syn-fin HOST PORT      raw SYN|FIN to (closed) PORT
  bad-csum HOST PORT     raw SYN with a wrong TCP checksum to PORT
"""
import ipaddress
import os
import socket
import struct
import sys
import threading
import time

TIMEOUT = 5.0

# linux/tcp.h
TCP_REPAIR = 19
TCP_REPAIR_QUEUE = 20
TCP_QUEUE_SEQ = 21
TCP_RECV_QUEUE = 1
TCP_SEND_QUEUE = 2
TCP_REPAIR_ON = 1
TCP_REPAIR_OFF_NO_WP = -1  # leave repair mode without sending a window probe


def die(msg):
    print(f"kernel_traffic: {msg}", file=sys.stderr)
    sys.exit(1)


def family_of(host):
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


# ---------------------------------------------------------------- server


def dual_socket(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    return s


def tcp_echo_conn(c):
    with c:
        c.settimeout(10)
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    return
                c.sendall(d)
        except OSError:
            return


def tcp_reset_conn(c):
    c.settimeout(10)
    try:
        c.recv(1024)
        c.sendall(b"r" * 3000)
        time.sleep(0.3)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    c.close()


def tcp_listener(port, handler):
    s = dual_socket(socket.SOCK_STREAM, port)
    s.listen(16)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handler, args=(c,), daemon=True).start()


def udp_echo(port):
    s = dual_socket(socket.SOCK_DGRAM, port)
    while True:
        d, peer = s.recvfrom(65536)
        s.sendto(b"echo:" + d, peer)
        if d.startswith(b"twice"):
            threading.Timer(0.3, lambda p=peer, m=d: s.sendto(b"again:" + m, p)).start()


def serve(seconds):
    for port, handler in ((8001, tcp_echo_conn), (8003, tcp_echo_conn),
                          (8004, tcp_echo_conn), (8002, tcp_reset_conn)):
        threading.Thread(target=tcp_listener, args=(port, handler), daemon=True).start()
    threading.Thread(target=udp_echo, args=(7000,), daemon=True).start()
    time.sleep(seconds)


# ---------------------------------------------------------------- clients


def connect(host, port):
    s = socket.socket(family_of(host), socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect((host, port))
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            die(f"connection closed after {len(buf)} of {n} bytes")
        buf += d
    return buf


def close_orderly(s):
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    s.close()


def tcp_closed(host, port):
    try:
        connect(host, port)
    except ConnectionRefusedError:
        return
    die(f"{host}:{port} accepted a connection; expected a reset")


def tcp_reset(host, port):
    s = connect(host, port)
    s.sendall(b"GET\n")
    got = 0
    try:
        while True:
            d = s.recv(65536)
            if not d:
                die(f"orderly close after {got} bytes; expected a reset")
            got += len(d)
    except ConnectionResetError:
        pass
    if got != 3000:
        die(f"got {got} bytes before the reset, expected 3000")


def tcp_echo(host, port):
    s = connect(host, port)
    s.sendall(b"hello\n")
    if recv_exact(s, 6) != b"hello\n":
        die("bad echo")
    close_orderly(s)


def udp(host, port):
    s = socket.socket(family_of(host), socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    s.connect((host, port))
    for m in (b"one\n", b"two\n", b"twice\n"):
        s.send(m)
        if s.recv(2048) != b"echo:" + m:
            die("bad udp echo")
    s.close()  # the server's second answer to "twice" hits a closed port
    time.sleep(0.6)


def udp_closed(host, port):
    s = socket.socket(family_of(host), socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    s.connect((host, port))
    s.send(b"probe\n")
    try:
        s.recv(2048)
    except ConnectionRefusedError:
        return
    die("no ICMP port unreachable")


def csum16(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_segment(src, dst, sport, dport, seq, ack, flags, window=502, opts=b"", bad_csum=False):
    off = (20 + len(opts)) // 4
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      off << 4, flags, window, 0, 0) + opts
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if a.version == 4:
        pseudo = a.packed + b.packed + struct.pack("!BBH", 0, 6, len(hdr))
    else:
        pseudo = a.packed + b.packed + struct.pack("!IxxxB", len(hdr), 6)
    c = csum16(pseudo + hdr)
    if bad_csum:
        c ^= 0x5A5A
    return hdr[:16] + struct.pack("!H", c) + hdr[18:]


def raw_send(src, dst, seg):
    fam = family_of(dst)
    r = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_TCP)
    with r:
        r.sendto(seg, (dst, 0))


def local_addr(dst):
    """Source address the client uses toward dst, and a free local port."""
    s = socket.socket(family_of(dst), socket.SOCK_STREAM)
    s.bind(("::" if family_of(dst) == socket.AF_INET6 else "0.0.0.0", 0))
    port = s.getsockname()[1]
    u = socket.socket(family_of(dst), socket.SOCK_DGRAM)
    u.connect((dst, 9))
    src = u.getsockname()[0]
    u.close()
    return src, port, s  # keep s open so the port stays reserved


def repair_seqs(s):
    s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)
    try:
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)
        snd_nxt = s.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ) & 0xFFFFFFFF
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)
        rcv_nxt = s.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ) & 0xFFFFFFFF
    finally:
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP)
    return snd_nxt, rcv_nxt


def oow_ack(host, port):
    s = connect(host, port)
    s.sendall(b"hello\n")
    if recv_exact(s, 6) != b"hello\n":
        die("bad echo")
    time.sleep(0.1)  # let the server's ACK/echo settle; nothing in flight
    snd_nxt, rcv_nxt = repair_seqs(s)
    src, sport = s.getsockname()[:2]
    raw_send(src, host, tcp_segment(src, host, sport, port, snd_nxt + (1 << 30), rcv_nxt, 0x10))
    time.sleep(0.3)  # the server answers with a duplicate ACK
    s.sendall(b"bye\n")
    if recv_exact(s, 4) != b"bye\n":
        die("bad echo after the out-of-window segment")
    close_orderly(s)


def syn_fin(host, port):
    src, sport, keep = local_addr(host)
    raw_send(src, host, tcp_segment(src, host, sport, port, 0x12345678, 0, 0x03, window=64240))
    time.sleep(0.3)
    keep.close()


def bad_csum(host, port):
    src, sport, keep = local_addr(host)
    raw_send(src, host, tcp_segment(src, host, sport, port, 0x12345678, 0, 0x02, window=64240,
                                    bad_csum=True))
    time.sleep(0.3)
    keep.close()


def main(argv):
    if len(argv) >= 2 and argv[1] == "serve":
        secs = float(argv[3]) if len(argv) >= 4 and argv[2] == "--seconds" else 60.0
        serve(secs)
        return
    cmds = {"tcp-closed": tcp_closed, "tcp-reset": tcp_reset, "tcp-echo": tcp_echo,
            "udp": udp, "udp-closed": udp_closed, "oow-ack": oow_ack,
            "syn-fin": syn_fin, "bad-csum": bad_csum}
    if len(argv) != 4 or argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        cmds[argv[1]](argv[2], int(argv[3]))
    except (OSError, socket.timeout) as e:
        die(f"{argv[1]} {argv[2]} {argv[3]}: {e!r}")


if __name__ == "__main__":
    main(sys.argv)
