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
  usoburst.py put HOST PORT N SIZE  the other way: announce a burst, send N
                                    bytes in ONE sendmsg with UDP_SEGMENT=SIZE
                                    and print the server's "DATAGRAMS BYTES OK"
                                    for what it received
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
            words = req.split()
            if words[0] == b"put":
                n, size = int(words[1]), int(words[2])
                s.sendto(receive(s, n, size).encode(), peer)
                continue
            n, size = (int(x) for x in words)
            s.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, size)
            s.sendto(pattern(n), peer)


def receive(s, n, size):
    """Reads datagrams until n bytes came (or 3 s passed): 'DATAGRAMS BYTES OK'."""
    got = []
    total = 0
    end = time.time() + 3
    while total < n and time.time() < end:
        try:
            d = s.recv(65535)
        except socket.timeout:
            continue
        got.append(d)
        total += len(d)
    data = b"".join(got)
    sizes_ok = got and all(len(d) == size for d in got[:-1]) and len(got[-1]) <= size
    ok = 1 if sizes_ok and data == pattern(n) else 0
    return f"{len(got)} {total} {ok}"


def get(host, port, n, size):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(0.2)
    s.sendto(f"{n} {size}".encode(), (host, port))
    ans = receive(s, n, size)
    print(ans)
    return 0 if ans.endswith(" 1") else 1


def put(host, port, n, size):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    s.settimeout(5)
    s.connect((host, port))
    s.send(f"put {n} {size}".encode())
    time.sleep(0.05)  # the announcement first
    s.setsockopt(socket.IPPROTO_UDP, UDP_SEGMENT, size)
    s.send(pattern(n))
    try:
        ans = s.recv(100).decode()
    except socket.timeout:
        ans = "no answer"
    print(ans)
    return 0 if ans.endswith(" 1") else 1


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "put":
        sys.exit(put(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
    else:
        sys.exit(get(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
