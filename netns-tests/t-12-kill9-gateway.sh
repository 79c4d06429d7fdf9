#!/usr/bin/env bash
# After kill -9 of the gateway, no packet crosses between client and server:
# the client's ICMP/TCP/UDP attempts reach nothing on the server's link, and the
# server's attempts towards the client reach nothing on the client's side.
. "$(dirname "$0")/lib.sh"
need_gateway
lab_up
check_allowed_http client 80
gw="$GW_PID"
kill -0 "$gw" || fail "gateway pid $gw not running"
kill -9 "$gw"
for _ in $(seq 50); do kill -0 "$gw" 2>/dev/null || break; sleep 0.1; done
kill -0 "$gw" 2>/dev/null && fail "gateway pid $gw survived kill -9"
sleep 0.3
# inbound only: what arrives at the server from the gateway side, and at the client
CAP_DIRECTION=in cap_start srv server eth0 "src net 100.64.0.0/10 or src host 198.51.100.2 or icmp[icmptype] == icmp-echo or tcp dst port 80 or udp dst port 9 or (ip6 and not icmp6)"
CAP_DIRECTION=in cap_start cli_ul client eth0 "src host $SERVER or src net 203.0.113.0/24 or (ip6 and not icmp6)"
CAP_DIRECTION=in cap_start cli_tun client "$CLIENT_IF" "ip or ip6"
cap_start cli_any client eth0 "ip and not arp"
in_ns client ping -c3 -i0.2 -W1 "$SERVER" >/dev/null 2>&1 && fail "client still pings the server after kill -9 of the gateway"
in_ns client curl -sS -o /dev/null --max-time 2 "http://$SERVER:80/" 2>/dev/null && fail "client curl still works after kill -9 of the gateway"
in_ns client timeout 2 bash -c "echo x > /dev/udp/$SERVER/9" 2>/dev/null || true
in_ns client ping -6 -c2 -i0.2 -W1 "$SERVER6" >/dev/null 2>&1 && fail "client still pings the server over IPv6 after kill -9"
in_ns server ping -c3 -i0.2 -W1 "$CLIENT_ADDR" >/dev/null 2>&1 && fail "server still pings the client after kill -9 of the gateway"
a="$(cap_count srv)"; b="$(cap_count cli_ul)"; c="$(cap_count cli_tun)"; ctl="$(cap_count cli_any)"
[ "$ctl" -gt 0 ] || fail "control: the client's link saw none of its own (encrypted) attempts"
[ "$a" = 0 ] || fail "$a packets from the client side reached the server's link: $(cap_show srv)"
[ "$b" = 0 ] || fail "$b packets from the server side reached the client's link: $(cap_show cli_ul)"
[ "$c" = 0 ] || fail "$c packets arrived on the client's tunnel interface: $(cap_show cli_tun)"
ok "gateway killed -9: 0 packets crossed (client link saw $ctl of its own attempts)"
