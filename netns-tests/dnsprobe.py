#!/usr/bin/env python3
"""netns-tests/dnsprobe.py: a tiny DNS responder and query tool for the L7 tests.

  dnsprobe.py serve PORT              answer every A query with 192.0.2.53 (UDP)
  dnsprobe.py query SERVER NAMES SECS queries from one fresh source port, one
                                      per comma-separated name, in turn; prints
                                      a line per name: the answer address, or
                                      "timeout" after SECS seconds; exits 0 when
                                      every name was answered, else 1
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


def query(server, names, secs):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(secs)
    rc = 0
    for i, name in enumerate(names.split(",")):
        qid = struct.pack(">H", 0x4c37 + i)
        msg = qid + b"\x01\x00" + struct.pack(">HHHH", 1, 0, 0, 0) + encode(name) + b"\0\x01\0\x01"
        s.sendto(msg, (server, 53))
        try:
            while True:
                r, _ = s.recvfrom(4096)
                if r[:2] == qid:
                    break
        except socket.timeout:
            print("timeout")
            rc = 1
            continue
        print(".".join(str(b) for b in r[-4:]))
    return rc


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        sys.exit(query(sys.argv[2], sys.argv[3], float(sys.argv[4])))
