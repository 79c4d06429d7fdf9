#!/usr/bin/env bash
# Netstack mode: 1,000 concurrent connections against max_connections = 200:
# at most 200 are relayed at once, the rest are refused cleanly (RST, so
# ECONNREFUSED, no timeouts), the gateway's memory stays bounded, and it
# serves normally once they are gone.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netstack.sh"
need_gateway
MAX=200
N="${NETNS_CONNS:-1000}"
LAB_NS_MAX_CONN=$MAX ns_lab_up
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
rss0="$(gw_rss_kb)"
tool_bg conns client many-conns "$SERVER" 80 "$N" --hold 8
wait_log "$S/conns.log" "connected" 40 || fail "many-conns did not finish: $(cat "$S/conns.log")"
read -r _ c _ r _ t _ o < "$S/conns.log"
rss1="$(gw_rss_kb)"
say "connections: connected $c refused $r timeout $t other $o; gateway RSS $rss0 -> $rss1 kB"
# the client's ping flow (ICMP echo relay) may hold one of the slots
[ "$c" -le "$MAX" ] || fail "$c connections relayed, the maximum is $MAX"
[ "$c" -ge $((MAX - 5)) ] || fail "only $c connections relayed, expected about $MAX"
[ "$t" = 0 ] && [ "$o" = 0 ] || fail "connections beyond the limit were not refused cleanly: $t timed out, $o other errors"
[ "$((c + r))" = "$N" ] || fail "connected $c + refused $r != $N"
[ "$rss1" -lt 200000 ] || fail "gateway RSS $rss1 kB with $c connections (bound 200 MB)"
ok "$c of $N relayed (max $MAX), $r refused with RST, none timed out; gateway RSS $rss1 kB"
# after the holders exit the slots free up
sleep 9
read -r rc _ code < <(curl_probe client "http://$SERVER:80/" 10)
[ "$rc" = 0 ] && [ "$code" = 200 ] || fail "HTTP after the flood: curl exit $rc status $code"
ok "the gateway serves normally after the flood; RSS $(gw_rss_kb) kB"
