#!/usr/bin/env bash
# A connection limit of 3 per peer ([[limits.peer]] max_conns = 3): three
# slow downloads run, the fourth connection is refused (its SYN is dropped:
# curl times out), and the refusal is counted.
. "$(dirname "$0")/lib.sh"
need_portcullis
LAB_PORTCULLIS_EXTRA='[limits]

[[limits.peer]]
peer = "client"
max_conns = 3' lab_up
head -c 4000000 /dev/urandom > "$S/www/slow.bin"
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
# ping and the gateway's own flows: flush so only the downloads count
ctl conntrack --flush >/dev/null
pids=()
for _ in 1 2 3; do
  in_ns client curl -s -o /dev/null --limit-rate 50k --max-time 20 "http://$SERVER:80/slow.bin" &
  pids+=($!)
done
sleep 2
live="$(ctl conntrack --peer client --port 80 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["matched"])')"
[ "$live" = 3 ] || fail "expected 3 tracked downloads, found $live: $(ctl conntrack)"
r="$(curl_probe client "http://$SERVER:80/" 3)"; rc="${r%% *}"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
[ "$rc" = 28 ] || fail "the 4th connection: expected a timeout (exit 28), got $r"
refused="$(ctl stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["shaper_refused"].get("peer_concurrent",0))')"
[ "$refused" -ge 1 ] || fail "no peer_concurrent refusal counted"
ok "3 connections live, the 4th refused (curl exit 28), $refused SYN(s) refused as peer_concurrent"
