#!/usr/bin/env python3
"""netns-tests/dnsprobe.py: a tiny DNS responder and query tool for the L7 tests.

  dnsprobe.py serve PORT              answer every A query with 192.0.2.53 (UDP)
  dnsprobe.py query SERVER NAME SECS  one query from a fresh source port; prints
                                      the answer address and exits 0, or prints
                                      "timeout" and exits 1 after SECS seconds
"""
import socket
import struct
import sys


def encode(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def serve(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        q, peer = s.recvfrom(4096)
        if len(q) < 12:
            continue
        qid = q[:2]
        # the question ends 4 bytes after its root label
        end = q.index(b"\0", 12) + 5
        question = q[12:end]
        ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 53])
        s.sendto(qid + b"\x81\x80" + struct.pack(">HHHH", 1, 1, 0, 0) + question + ans, peer)


def query(server, name, secs):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(secs)
    msg = b"\x4c\x37\x01\x00" + struct.pack(">HHHH", 1, 0, 0, 0) + encode(name) + b"\0\x01\0\x01"
    s.sendto(msg, (server, 53))
    try:
        r, _ = s.recvfrom(4096)
    except socket.timeout:
        print("timeout")
        return 1
    print(".".join(str(b) for b in r[-4:]))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        sys.exit(query(sys.argv[2], sys.argv[3], float(sys.argv[4])))
