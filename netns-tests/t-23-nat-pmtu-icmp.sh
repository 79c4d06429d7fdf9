#!/usr/bin/env bash
# PMTU discovery and traceroute through portcullis's NAT: the client is
# masqueraded as 100.64.0.254 (lab --nat); the server namespace routes on to
# a "far" host (a namespace this test adds to its lab) over a link with MTU 1280.
# - a 1300-byte DF datagram from the client makes the server (a router beyond
#   the NAT) send a fragmentation-needed to 100.64.0.254; it reaches the client
#   with the quoted header rewritten to the client's own tuple
#   100.64.0.2:7777 -> far:9999, and the client kernel learns the path MTU
#   (a second 1300-byte send fails with EMSGSIZE);
# - TTL-limited probes get time-exceeded messages back, quoted headers
#   rewritten the same way (traceroute);
# - the gateway counts the translated ICMP errors;
# - `nft list ruleset` is empty in every namespace of the lab.
. "$(dirname "$0")/lib.sh"
need_gateway
[ "$GATEWAY_KIND" = portcullis ] || skip "portcullis NAT only"
export LAB_PORTCULLIS_EXTRA='
[[rule]]
chain = "forward"
name = "udp-9999"
from = "client"
to = "tun"
proto = "udp"
dport = 9999
action = "accept"

# ICMP errors about tracked flows (the rules decide RELATED packets too)
[[rule]]
chain = "forward"
name = "related-icmp"
state = "related"
proto = "icmp"
action = "accept"'
lab_up --nat
FAR=203.0.113.242
# the far host: a namespace of this lab (the lab tears it down with the rest)
ip netns add "pl${ID}-far"
echo far >> "$S/nodes"
in_ns far ip link set lo up
ip -n "pl${ID}-server" link add r0 type veth peer name eth0 netns "pl${ID}-far"
ip -n "pl${ID}-server" link set r0 mtu 1280 up
ip -n "pl${ID}-far" link set eth0 mtu 1280 up
ip -n "pl${ID}-server" addr add 203.0.113.241/28 dev r0
ip -n "pl${ID}-far" addr add "$FAR/28" dev eth0
ip -n "pl${ID}-far" route replace default via 203.0.113.241
in_ns server sysctl -qw net.ipv4.ip_forward=1
ip -n "pl${ID}-gateway" route replace 203.0.113.240/28 via 203.0.113.2

wait_ping client "$SERVER" 15 || fail "client cannot ping the server"
CAP_DIRECTION=in cap_start icmp client "$CLIENT_IF" "icmp"
cap_start far far eth0 "udp port 9999"
res="$(in_ns client timeout 20 python3 "$NT_DIR/icmpcheck.py" send "$FAR" 9999 7777)" || fail "probe sender failed: $res"
cap_stop icmp; cap_stop far
chk="$(python3 "$NT_DIR/icmpcheck.py" check "$S/cap-icmp.pcap" "$CLIENT_ADDR" 7777 "$FAR" 9999)" \
  || fail "ICMP errors at the client: $chk (capture: $(cap_show icmp 10))"
echo "$res" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["emsgsize_after"], d' \
  || fail "the client kernel did not learn the smaller path MTU: $res; route: $(in_ns client ip route get "$FAR")"
python3 - "$chk" <<'PY' || fail "expected a fragmentation-needed with mtu 1280 and time-exceeded messages: $chk"
import json, sys
d = json.loads(sys.argv[1])
fn = [r for r in d["found"] if r["type"] == 3]
te = [r for r in d["found"] if r["type"] == 11]
assert any(r["mtu"] == 1280 for r in fn), d
assert te, d
PY
at_far="$(tcpdump -nn -r "$S/cap-far.pcap" src host 100.64.0.254 2>/dev/null | wc -l)"
from_client="$(tcpdump -nn -r "$S/cap-far.pcap" src host "$CLIENT_ADDR" 2>/dev/null | wc -l)"
[ "$at_far" -gt 0 ] || fail "no probe reached the far host from the NAT address: $(cap_show far)"
[ "$from_client" = 0 ] || fail "the far host saw the client's own address"
st="$(ctl stats --json)"
n_x="$(echo "$st" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("nat",{}).get("icmp_errors_translated","?"))')"
for n in client gateway server far; do
  rs="$(in_ns "$n" nft list ruleset 2>/dev/null || true)"
  [ -z "$rs" ] || fail "nftables ruleset in $n: $rs"
done
ok "fragmentation-needed (mtu 1280) and time-exceeded reach the client with the quoted header $CLIENT_ADDR:7777 -> $FAR:9999 ($chk); PMTU learned ($res); far host saw 100.64.0.254 only ($at_far probes); gateway icmp_errors_translated=$n_x; no nftables"
