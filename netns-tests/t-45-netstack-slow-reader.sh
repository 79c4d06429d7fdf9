#!/usr/bin/env bash
# Netstack mode: a slow reader (curl --limit-rate 1M on the client) fetching
# a large file from a fast server does not make the gateway's memory grow:
# back-pressure runs from the client's TCP window through smoltcp to the
# host socket.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netstack.sh"
need_gateway
LAB_WWW_SIZE=300m ns_lab_up
head -c $((200 * 1024 * 1024)) /dev/zero > "$S/www/big.bin"
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
in_ns client timeout 12 curl -sS --limit-rate 1M -o /dev/null "http://$SERVER:80/big.bin" 2>/dev/null &
CAP_PIDS+=("$!")
sleep 3
rss_a="$(gw_rss_kb)"
samples=("$rss_a")
for _ in 1 2 3 4 5 6 7; do sleep 1; samples+=("$(gw_rss_kb)"); done
rss_b="$(gw_rss_kb)"
say "gateway RSS over 8 s of a 1 MB/s reader: ${samples[*]} kB"
[ $((rss_b - rss_a)) -lt 8192 ] || fail "gateway RSS grew by $((rss_b - rss_a)) kB while the reader was slow"
[ "$rss_b" -lt 100000 ] || fail "gateway RSS $rss_b kB"
ok "gateway RSS stayed at ${rss_a}..${rss_b} kB while ~8 MB of 200 MB were read slowly"
