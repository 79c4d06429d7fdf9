#!/usr/bin/env python3
"""netns-tests/icmpcheck.py: send probes and check ICMP errors quoted headers (the NAT PMTU test).

    icmpcheck.py send DST DPORT SPORT
        From SPORT: one 1300-byte UDP datagram with DF set (IP_PMTUDISC_DO),
        then UDP datagrams with TTL 1..4 (payload "ttl N"); waits 1 s; prints
        JSON {"sent": n, "emsgsize_after": bool} (after a fragmentation-needed
        the kernel knows the smaller path MTU: a second 1300-byte send fails
        with EMSGSIZE).

    icmpcheck.py check PCAP SRC SPORT DST DPORT
        Reads the capture (linktype RAW, LINUX_SLL or Ethernet), finds the ICMP
        errors (type 3 code 4 and type 11) and checks that each one's quoted IP +
        UDP header is SRC:SPORT -> DST:DPORT (the client's original tuple) and
        that the outer destination is SRC. Prints JSON; exit 1 when no
        fragmentation-needed is found or any quoted header is wrong.
"""
import errno
import json
import socket
import struct
import sys
import time

IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2


def send(dst, dport, sport):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", sport))
    s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    sent = 0
    s.sendto(b"D" * 1300, (dst, dport))
    sent += 1
    time.sleep(0.5)
    for ttl in (1, 2, 3, 4):
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        s.sendto(("ttl %d" % ttl).encode(), (dst, dport))
        sent += 1
    time.sleep(1.0)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 64)
    emsg = False
    for _ in range(3):
        try:
            s.sendto(b"D" * 1300, (dst, dport))
        except OSError as e:
            if e.errno == errno.EMSGSIZE:
                emsg = True
                break
        time.sleep(0.2)
    print(json.dumps({"sent": sent, "emsgsize_after": emsg}))


def packets(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = struct.unpack("<I", data[:4])[0]
    e = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    link = struct.unpack(e + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
        pkt = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if link in (101, 12, 228):
            yield pkt
        elif link == 113:
            yield pkt[16:]
        elif link == 1:
            yield pkt[14:]


def ip4(b):
    return socket.inet_ntoa(b)


def check(path, src, sport, dst, dport):
    found = []
    bad = []
    for p in packets(path):
        if len(p) < 20 or p[0] >> 4 != 4 or p[9] != 1:
            continue
        ihl = (p[0] & 15) * 4
        icmp = p[ihl:]
        if len(icmp) < 8 + 28:
            continue
        ty, code = icmp[0], icmp[1]
        if not ((ty == 3 and code == 4) or ty == 11):
            continue
        inner = icmp[8:]
        iihl = (inner[0] & 15) * 4
        if inner[9] != 17 or len(inner) < iihl + 8:
            continue
        isrc, idst = ip4(inner[12:16]), ip4(inner[16:20])
        isp, idp = struct.unpack("!HH", inner[iihl:iihl + 4])
        rec = {
            "type": ty, "code": code, "from": ip4(p[12:16]), "to": ip4(p[16:20]),
            "mtu": struct.unpack("!H", icmp[6:8])[0] if ty == 3 else None,
            "inner": "%s:%d -> %s:%d" % (isrc, isp, idst, idp),
        }
        found.append(rec)
        if (isrc, isp, idst, idp) != (src, sport, dst, dport) or rec["to"] != src:
            bad.append(rec)
    fragneeded = [r for r in found if r["type"] == 3]
    print(json.dumps({"found": found, "bad": bad}))
    sys.exit(0 if fragneeded and not bad else 1)


def main():
    a = sys.argv[1:]
    if a and a[0] == "send":
        send(a[1], int(a[2]), int(a[3]))
    elif a and a[0] == "check":
        check(a[1], a[2], int(a[3]), a[4], int(a[5]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
