#!/usr/bin/env python3
"""Small traffic tools for the netstack netns tests (standard library only).

Every server stops by itself after --seconds; every client has timeouts.

  dns-server ADDR --seconds S     UDP+TCP DNS on ADDR:53: any A query -> 192.0.2.123
  dns-query udp|tcp SERVER NAME   prints the first A record of the answer
  udp-echo-server ADDR PORT --seconds S
  udp-echo ADDR PORT              sends 5 datagrams, prints how many came back intact
  many-conns ADDR PORT N --hold S prints "connected C refused R timeout T other O",
                                  keeps the connected ones open for S seconds
"""
import argparse
import errno
import os
import random
import select
import socket
import struct
import sys
import threading
import time

ANSWER = "192.0.2.123"


def dns_answer(query: bytes) -> bytes:
    if len(query) < 12:
        return b""
    qid = query[:2]
    # question section: labels until a zero byte, then type and class
    i = 12
    while i < len(query) and query[i] != 0:
        i += query[i] + 1
    question = query[12 : i + 5]
    flags = b"\x81\x80"
    counts = struct.pack("!HHHH", 1, 1, 0, 0)
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(ANSWER)
    return qid + flags + counts + question + rr


def dns_server(addr: str, seconds: float) -> None:
    end = time.time() + seconds
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    u.bind((addr, 53))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, 53))
    t.listen(16)
    print("dns server ready", flush=True)
    while time.time() < end:
        r, _, _ = select.select([u, t], [], [], 0.5)
        if u in r:
            q, peer = u.recvfrom(4096)
            print(f"udp query from {peer[0]}", flush=True)
            u.sendto(dns_answer(q), peer)
        if t in r:
            c, peer = t.accept()
            c.settimeout(2)
            try:
                ln = struct.unpack("!H", c.recv(2))[0]
                q = b""
                while len(q) < ln:
                    part = c.recv(ln - len(q))
                    if not part:
                        break
                    q += part
                a = dns_answer(q)
                print(f"tcp query from {peer[0]}", flush=True)
                c.sendall(struct.pack("!H", len(a)) + a)
            except Exception as e:  # noqa: BLE001
                print(f"tcp error {e}", flush=True)
            finally:
                c.close()


def dns_query(transport: str, server: str, name: str) -> None:
    qid = random.randrange(65536)
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack("!HH", 1, 1)
    if transport == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(q, (server, 53))
        a, _ = s.recvfrom(4096)
    else:
        s = socket.create_connection((server, 53), timeout=3)
        s.sendall(struct.pack("!H", len(q)) + q)
        ln = struct.unpack("!H", s.recv(2))[0]
        a = b""
        while len(a) < ln:
            part = s.recv(ln - len(a))
            if not part:
                break
            a += part
    if struct.unpack("!H", a[:2])[0] != qid:
        sys.exit("answer id mismatch")
    print(socket.inet_ntoa(a[-4:]))


def udp_echo_server(addr: str, port: int, seconds: float) -> None:
    end = time.time() + seconds
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(0.5)
    print("udp echo ready", flush=True)
    while time.time() < end:
        try:
            d, peer = s.recvfrom(65535)
        except socket.timeout:
            continue
        s.sendto(d, peer)


def udp_echo(addr: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    good = 0
    for i in range(5):
        msg = os.urandom(100 + i * 200)
        s.sendto(msg, (addr, port))
        try:
            d, _ = s.recvfrom(65535)
            good += d == msg
        except socket.timeout:
            pass
    print(good)


def many_conns(addr: str, port: int, n: int, hold: float) -> None:
    socks = []
    result = {"connected": 0, "refused": 0, "timeout": 0, "other": 0}
    pending = {}
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex((addr, port))
        if rc not in (0, errno.EINPROGRESS):
            result["other"] += 1
            s.close()
            continue
        pending[s.fileno()] = s
    end = time.time() + 15
    p = select.poll()
    for fd in pending:
        p.register(fd, select.POLLOUT)
    while pending and time.time() < end:
        for fd, _ev in p.poll(200):
            s = pending.pop(fd, None)
            if s is None:
                continue
            p.unregister(fd)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                result["connected"] += 1
                socks.append(s)
            elif err == errno.ECONNREFUSED:
                result["refused"] += 1
                s.close()
            else:
                result["other"] += 1
                s.close()
    result["timeout"] = len(pending)
    print(" ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    time.sleep(hold)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("dns-server")
    a.add_argument("addr")
    a.add_argument("--seconds", type=float, default=60)
    a = sub.add_parser("dns-query")
    a.add_argument("transport", choices=["udp", "tcp"])
    a.add_argument("server")
    a.add_argument("name")
    a = sub.add_parser("udp-echo-server")
    a.add_argument("addr")
    a.add_argument("port", type=int)
    a.add_argument("--seconds", type=float, default=60)
    a = sub.add_parser("udp-echo")
    a.add_argument("addr")
    a.add_argument("port", type=int)
    a = sub.add_parser("many-conns")
    a.add_argument("addr")
    a.add_argument("port", type=int)
    a.add_argument("n", type=int)
    a.add_argument("--hold", type=float, default=5)
    args = ap.parse_args()
    if args.cmd == "dns-server":
        dns_server(args.addr, args.seconds)
    elif args.cmd == "dns-query":
        dns_query(args.transport, args.server, args.name)
    elif args.cmd == "udp-echo-server":
        udp_echo_server(args.addr, args.port, args.seconds)
    elif args.cmd == "udp-echo":
        udp_echo(args.addr, args.port)
    elif args.cmd == "many-conns":
        many_conns(args.addr, args.port, args.n, args.hold)


if __name__ == "__main__":
    main()
