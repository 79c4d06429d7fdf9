#!/usr/bin/env python3
"""netns-tests/lbclient.py: a bounded HTTP/1.0 client for the load-balancing tests.

    lbclient.py HOST PORT COUNT [--threads N] [--path /] [--deadline SECONDS]

Makes COUNT connections (a pool of N threads, each connection one GET), reads
the answer "backend NAME" and prints one JSON object: {"counts": {NAME: n},
"errors": n, "secs": s}. It stops by itself at the deadline (default 40 s):
connections not made by then count as errors.
"""
import argparse
import concurrent.futures
import json
import socket
import time


def one(host, port, path, timeout):
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, host)).encode())
            data = b""
            while True:
                b = s.recv(4096)
                if not b:
                    break
                data += b
                if len(data) > 65536:
                    break
        body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
        if body.startswith("backend "):
            return body.split()[1]
        return None
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--path", default="/")
    ap.add_argument("--deadline", type=float, default=40.0)
    ap.add_argument("--timeout", type=float, default=5.0)
    a = ap.parse_args()
    count = min(a.count, 20000)
    t0 = time.time()
    end = t0 + a.deadline
    counts, errors = {}, 0

    def job(_):
        if time.time() > end:
            return None
        return one(a.host, a.port, a.path, a.timeout)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(a.threads, 64))) as ex:
        for name in ex.map(job, range(count)):
            if name is None:
                errors += 1
            else:
                counts[name] = counts.get(name, 0) + 1
    print(json.dumps({"counts": counts, "errors": errors, "secs": round(time.time() - t0, 2)}))


if __name__ == "__main__":
    main()
