#!/usr/bin/env bash
# Upstream mode: a host in the LAN namespace reaches the server through
# gateway -> upstream (stock wireguard-go server, which routes it onto its
# server link). The gateway masquerades the LAN onto its upstream tunnel
# address, so the server sees the LAN traffic arrive on its upstream-side link
# from 100.64.1.2, and nothing of it on its gateway-side link. No namespace has
# an nftables table (portcullis's NAT is in userspace; the upstream routes).
. "$(dirname "$0")/lib.sh"
need_gateway
lab_up --upstream
cap_start srv_up server eth1 "tcp dst port 80 or icmp[icmptype] == icmp-echo"
cap_start srv_gw server eth0 "tcp dst port 80 or icmp[icmptype] == icmp-echo"
cap_start gw_up gateway up0 "ip and not udp port 51821"
wait_ping lan "$SERVER_VIA_UPSTREAM" 15 || fail "LAN host cannot ping $SERVER_VIA_UPSTREAM via the upstream"
r="$(curl_probe lan "http://$SERVER_VIA_UPSTREAM:80/" 5)"; rc="${r%% *}"
[ "$rc" = 0 ] || fail "LAN curl to $SERVER_VIA_UPSTREAM:80 failed: exit $rc ($(cat "$S/last_curl_err"))"
grep -q "portcullis lab $ID: hello" "$S/last_body" || fail "unexpected body"
via_up="$(cap_count srv_up src host $GATEWAY_UPSTREAM_ADDR)"
via_gw="$(cap_count srv_gw)"
plain_up="$(cap_count gw_up)"
[ "$via_up" -gt 0 ] || fail "the server saw no LAN traffic from the gateway's upstream address ($GATEWAY_UPSTREAM_ADDR) via the upstream"
[ "$via_gw" = 0 ] || fail "$via_gw LAN packets reached the server on the gateway's direct link: $(cap_show srv_gw)"
[ "$plain_up" = 0 ] || fail "$plain_up non-WireGuard IP packets on the gateway's uplink: $(cap_show gw_up)"
if [ "${NETNS_GATEWAY:-portcullis}" = portcullis ]; then
  for n in lan gateway upstream server; do
    rs="$(in_ns "$n" nft list ruleset 2>/dev/null || true)"
    [ -z "$rs" ] || fail "namespace $n has an nftables ruleset: $rs"
  done
  ok "no nftables ruleset in lan, gateway, upstream or server"
fi
ok "LAN host reaches the server through the upstream ($via_up packets from $GATEWAY_UPSTREAM_ADDR; 0 on the direct link; uplink carries WireGuard only)"
