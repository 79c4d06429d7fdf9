#!/usr/bin/env bash
# Netstack mode where the host does not allow unprivileged ping sockets
# (net.ipv4.ping_group_range at the kernel default "1 0"): echo requests to
# the outside get no answer, the gateway says why in one clear log line, and
# TCP keeps working.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netstack.sh"
need_gateway
LAB_NS_PING=0 ns_lab_up
[ "$(in_ns gateway sysctl -n net.ipv4.ping_group_range | awk '{print $1, $2}')" = "1 0" ] || fail "ping_group_range is not the default"
wait_ping client "$GW_TUN_ADDR" 10 || fail "the gateway's own address must still answer ping (no socket needed)"
in_ns client ping -c 2 -W 1 "$SERVER" >/dev/null 2>&1 && fail "ping to the server answered without ping sockets?"
end=$(( $(ms_now) + 5000 ))
until grep -q "ping_group_range" "$S/logs/gateway.log"; do
  [ "$(ms_now)" -lt "$end" ] || fail "no log line about ping sockets: $(tail -n 5 "$S/logs/gateway.log")"
  sleep 0.1
done
[ "$(grep -c ping_group_range "$S/logs/gateway.log")" = 1 ] || fail "the ping-socket warning should appear once"
ok "logged once: $(grep -o 'ICMP echo cannot be relayed[^"]*' "$S/logs/gateway.log" | head -1)"
read -r rc _ code < <(curl_probe client "http://$SERVER:80/" 5)
[ "$rc" = 0 ] && [ "$code" = 200 ] || fail "HTTP failed: curl exit $rc status $code"
ok "TCP unaffected"
