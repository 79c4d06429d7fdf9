#!/usr/bin/env bash
# A client sending from a source address outside its AllowedIPs on the gateway
# (100.64.0.99; its peer entry allows only 100.64.0.2/32) is dropped: pings from
# it get no reply and the server's capture sees 0 packets from it, while pings
# from the legitimate address are seen (control). The two kinds of ping differ
# by size (spoofed: 999-byte payload, legit: 777), so the count does not depend
# on whether the gateway NATs; the spoofed TCP attempt goes to port 8080, which
# nothing else uses here.
. "$(dirname "$0")/lib.sh"
need_gateway
lab_up
SPOOF=100.64.0.99
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
in_ns client ip addr add "$SPOOF/32" dev "$CLIENT_IF"
# IP total length = 20 (IP) + 8 (ICMP) + payload
cap_start spoof server eth0 "src host $SPOOF or (icmp and (ip[2:2] = 1027 or ip[2:2] = 805)) or tcp dst port 8080"
in_ns client ping -c3 -i0.2 -W1 -s 777 -I "$CLIENT_ADDR" "$SERVER" >/dev/null || fail "control: ping from $CLIENT_ADDR failed"
if in_ns client ping -c3 -i0.2 -W1 -s 999 -I "$SPOOF" "$SERVER" >/dev/null 2>&1; then
  fail "ping from $SPOOF (outside the client's AllowedIPs) got a reply"
fi
# a TCP attempt too (one SYN per try, bounded)
in_ns client curl -sS -o /dev/null --max-time 2 --interface "$SPOOF" "http://$SERVER:8080/" 2>/dev/null && fail "curl from $SPOOF succeeded"
spoofed="$(cap_count spoof src host $SPOOF or ip[2:2] = 1027 or tcp dst port 8080)"
legit="$(cap_count spoof icmp and ip[2:2] = 805)"
[ "$legit" -ge 3 ] || fail "control: the server saw only $legit packets from $CLIENT_ADDR"
[ "$spoofed" = 0 ] || fail "the server saw $spoofed packets from $SPOOF: $(cap_show spoof)"
ok "source $SPOOF outside AllowedIPs dropped: 0 packets at the server (control: $legit from $CLIENT_ADDR)"
