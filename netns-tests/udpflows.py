#!/usr/bin/env python3
"""netns-tests/udpflows.py: bounded UDP flow generator and witness for the SNAT tests.

    udpflows.py server BIND_ADDR PORT SECONDS LOG
        Echo server: answers every datagram with its payload, and appends one line
        "RECV src_ip src_port payload" per datagram to LOG. Stops after SECONDS.

    udpflows.py flood DST PORT FIRST_SPORT COUNT RATE
        COUNT new flows: one datagram "flow SPORT" from each source port
        FIRST_SPORT .. FIRST_SPORT+COUNT-1 (bound explicitly, so every flow is a
        new 5-tuple), at most RATE datagrams per second. Prints a JSON summary.

    udpflows.py keep DST PORT SPORT SECONDS INTERVAL
        One long-lived flow from SPORT: a datagram "keep N" every INTERVAL
        seconds for SECONDS; prints a JSON summary {"sent": n, "answered": m}.
"""
import json
import socket
import sys
import time


def server(bind, port, secs, log):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((bind, port))
    s.settimeout(0.2)
    end = time.time() + secs
    last = 0.0
    with open(log, "a", buffering=1 << 16) as f:
        while time.time() < end:
            if time.time() - last > 0.1:
                f.flush()
                last = time.time()
            try:
                data, (ip, p) = s.recvfrom(2048)
            except socket.timeout:
                f.flush()
                continue
            f.write("RECV %s %d %s\n" % (ip, p, data.decode(errors="replace")))
            try:
                s.sendto(data, (ip, p))
            except OSError:
                pass


def flood(dst, port, first, count, rate):
    count = max(0, min(count, 60000))
    first = max(1024, first)
    t0 = time.time()
    sent = errors = 0
    for i in range(count):
        sp = first + i
        if sp > 65535:
            break
        # rate limit: never ahead of the schedule
        due = t0 + i / rate
        d = due - time.time()
        if d > 0:
            time.sleep(d)
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", sp))
            s.sendto(("flow %d" % sp).encode(), (dst, port))
            s.close()
            sent += 1
        except OSError:
            errors += 1
    print(json.dumps({"sent": sent, "errors": errors, "secs": round(time.time() - t0, 2)}))


def keep(dst, port, sport, secs, interval):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", sport))
    s.settimeout(interval)
    end = time.time() + secs
    sent = answered = 0
    n = 0
    while time.time() < end:
        msg = ("keep %d" % n).encode()
        s.sendto(msg, (dst, port))
        sent += 1
        n += 1
        t = time.time() + interval
        while time.time() < t:
            try:
                data, _ = s.recvfrom(2048)
                if data.startswith(b"keep "):
                    answered += 1
            except socket.timeout:
                break
            except OSError:
                break
        d = t - time.time()
        if d > 0:
            time.sleep(d)
    print(json.dumps({"sent": sent, "answered": answered}))


def main():
    a = sys.argv[1:]
    if a and a[0] == "server":
        server(a[1], int(a[2]), min(float(a[3]), 300.0), a[4])
    elif a and a[0] == "flood":
        flood(a[1], int(a[2]), int(a[3]), int(a[4]), max(1.0, min(float(a[5]), 50000.0)))
    elif a and a[0] == "keep":
        keep(a[1], int(a[2]), int(a[3]), min(float(a[4]), 300.0), max(0.01, float(a[5])))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
