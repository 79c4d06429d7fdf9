#!/usr/bin/env bash
# Peer-to-peer through the gateway obeys the forward rules: staff (client) may
# ping guests (client2); guests may not ping staff (no reply, and client's
# tunnel interface sees no echo request from client2).
. "$(dirname "$0")/lib.sh"
need_gateway
lab_up --client2
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
wait_ping client2 "$GW_TUN_ADDR" 10 || fail "client2 cannot ping the gateway"
in_ns client ping -c3 -i0.2 -W1 "$CLIENT2_ADDR" >/dev/null || fail "client (staff) -> client2 (guests) ping failed"
ok "client (staff) pings client2 (guests) through the gateway"
cap_start p2p client "$CLIENT_IF" "icmp and src host $CLIENT2_ADDR and icmp[icmptype] == icmp-echo"
if in_ns client2 ping -c3 -i0.2 -W1 "$CLIENT_ADDR" >/dev/null 2>&1; then
  fail "client2 (guests) -> client (staff) ping got a reply"
fi
n="$(cap_count p2p)"
[ "$n" = 0 ] || fail "client saw $n echo requests from client2: $(cap_show p2p)"
ok "client2 (guests) -> client (staff) dropped: 0 echo requests arrived"
