#!/usr/bin/env python3
"""UDP_SEGMENT (USO) bursts for netns t-15.

  usoburst.py serve PORT            answer each request "N SIZE" with N bytes
                                    sent in ONE sendmsg with UDP_SEGMENT=SIZE
                                    (the kernel cuts it into N/SIZE datagrams,
                                    or hands it whole to a device that offers
                                    USO); bounded: exits after 120 s
  usoburst.py get HOST PORT N SIZE  ask for a burst; print "DATAGRAMS BYTES OK"
                                    where OK is 1 when every datagram was SIZE
                                    bytes (the last may be shorter) and the
                                    bytes are the expected pattern, in order
"""
import socket
import sys
import time

UDP_SEGMENT = 103  # linux/udp.h


def pattern(n):
    return bytes((i * 7 + 3) & 0xFF for i in range(n))


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(port):
    socks = []
    for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, port))
        s.settimeout(0.2)
        socks.append(s)
    end = time.time() + 120
    while time.time() < end:
        for s in socks:
            try:
                req, peer = s.recvfrom(100)
            except socket.timeout:
                continue
            n, size = (int(x) for x in req.split())
            s.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, size)
            s.sendto(pattern(n), peer)


def get(host, port, n, size):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(f"{n} {size}".encode(), (host, port))
    got = []
    total = 0
    try:
        while total < n:
            d = s.recv(65535)
            got.append(d)
            total += len(d)
    except socket.timeout:
        pass
    data = b"".join(got)
    sizes_ok = all(len(d) == size for d in got[:-1]) and got and len(got[-1]) <= size
    ok = 1 if sizes_ok and data == pattern(n) else 0
    print(len(got), total, ok)
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        sys.exit(get(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
