#!/usr/bin/env bash
# Kill switch: with the upstream stopped, zero packets from the LAN host appear
# on any link other than the LAN's own (tcpdump on every other link of the
# gateway, the upstream and the server), while the LAN host tries ICMP, TCP and
# UDP to the server (both its addresses). Control: the gateway's LAN link does
# see the attempts.
. "$(dirname "$0")/lib.sh"
need_gateway
lab_up --upstream
wait_ping lan "$SERVER_VIA_UPSTREAM" 15 || fail "LAN host cannot reach $SERVER_VIA_UPSTREAM before the upstream is stopped"
up_pid="$("$LAB" pid --id "$ID" upstream)"
kill "$up_pid"
for _ in $(seq 50); do kill -0 "$up_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$up_pid" 2>/dev/null && fail "upstream wireguard-go (pid $up_pid) did not stop"
LEAK="src host $LAN_HOST or icmp[icmptype] == icmp-echo or tcp dst port 80 or udp dst port 9"
cap_start lan0 gateway lan0 "src host $LAN_HOST"
cap_start g_s0 gateway s0 "$LEAK"
cap_start g_up0 gateway up0 "$LEAK"
cap_start g_br0 gateway br0 "$LEAK"
cap_start u_eth0 upstream eth0 "$LEAK"
cap_start u_srv0 upstream srv0 "$LEAK"
cap_start s_eth0 server eth0 "$LEAK"
cap_start s_eth1 server eth1 "$LEAK"
for dst in "$SERVER_VIA_UPSTREAM" "$SERVER"; do
  in_ns lan ping -c3 -i0.2 -W1 "$dst" >/dev/null 2>&1 && fail "LAN host got a ping reply from $dst with the upstream stopped"
  in_ns lan curl -sS -o /dev/null --max-time 2 "http://$dst:80/" 2>/dev/null && fail "LAN curl to $dst succeeded with the upstream stopped"
  in_ns lan timeout 2 bash -c "echo leak > /dev/udp/$dst/9" 2>/dev/null || true
done
ctl="$(cap_count lan0)"
[ "$ctl" -gt 0 ] || fail "control: the gateway's LAN link saw no packets from the LAN host"
leaks=0
for c in g_s0 g_up0 g_br0 u_eth0 u_srv0 s_eth0 s_eth1; do
  n="$(cap_count "$c")"
  if [ "$n" != 0 ]; then echo "leak on $c: $n packets"; cap_show "$c"; leaks=$((leaks + n)); fi
done
[ "$leaks" = 0 ] || fail "$leaks LAN packets leaked with the upstream stopped"
ok "upstream stopped: 0 LAN packets on 7 other links ($ctl attempts seen on the LAN link)"
