#!/usr/bin/env bash
# A 10 Mbit/s per-peer limit ([[limits.peer]] bytes_per_sec = 1250000) holds
# (default burst: 250 ms) an iperf3 upload within +-10 % (receiver side,
# first 2 s omitted); over-limit
# packets are dropped and counted as rate_limited.
. "$(dirname "$0")/lib.sh"
need_portcullis
LAB_PORTCULLIS_EXTRA='[limits]

[[limits.peer]]
peer = "client"
bytes_per_sec = 1250000' lab_up
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
in_ns client timeout 40 iperf3 -c "$SERVER" -p 5201 -t 12 -O 2 -J > "$S/iperf.json" 2>&1 || fail "iperf3 failed: $(tail -c 400 "$S/iperf.json")"
mbps="$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e6))' "$S/iperf.json")"
limited="$(ctl stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["drop_reasons"].get("rate_limited",0))')"
python3 -c 'import sys; m=float(sys.argv[1]); sys.exit(0 if 9.0 <= m <= 11.0 else 1)' "$mbps" || fail "received $mbps Mbit/s, expected 10 +- 10 % (rate_limited drops: $limited)"
[ "$limited" -gt 0 ] || fail "no rate_limited drops counted"
ok "per-peer 10 Mbit/s limit: iperf3 received $mbps Mbit/s; $limited packets dropped as rate_limited"
