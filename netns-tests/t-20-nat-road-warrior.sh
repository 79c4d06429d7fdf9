#!/usr/bin/env bash
# Road-warrior masquerade and a port forward, done by portcullis (no netfilter):
# - the client's curl to the server arrives from the NAT address 100.64.0.254,
#   never from the client's tunnel address 100.64.0.2;
# - the server reaches an HTTP service on the client through the forward
#   100.64.0.200:8080 -> 100.64.0.2:80;
# - `nft list ruleset` is empty in every namespace of the lab.
. "$(dirname "$0")/lib.sh"
need_gateway
[ "$GATEWAY_KIND" = portcullis ] || skip "portcullis NAT only"
lab_up --nat
mkdir -p "$S/client-www"; echo "client $ID web" > "$S/client-www/index.html"
in_ns client timeout 60 python3 -m http.server --bind 100.64.0.2 --directory "$S/client-www" 80 >/dev/null 2>&1 &
CAP_PIDS+=("$!")
wait_ping client "$SERVER" 15 || fail "client cannot ping $SERVER"
cap_start srv server eth0 "tcp port 80 or tcp port 8080"
r="$(curl_probe client "http://$SERVER:80/" 5)"; rc="${r%% *}"
[ "$rc" = 0 ] || fail "client curl to $SERVER:80 failed: exit $rc ($(cat "$S/last_curl_err"))"
for _ in $(seq 50); do in_ns client ss -Hltn "sport = :80" | grep -q LISTEN && break; sleep 0.1; done
r="$(curl_probe server "http://100.64.0.200:8080/" 5)"; rc="${r%% *}"
[ "$rc" = 0 ] || fail "port forward: server curl to 100.64.0.200:8080 failed: exit $rc ($(cat "$S/last_curl_err"))"
grep -q "client $ID web" "$S/last_body" || fail "port forward: unexpected body $(head -c 200 "$S/last_body")"
cap_stop srv
from_nat="$(tcpdump -nn -r "$S/cap-srv.pcap" src host 100.64.0.254 and tcp dst port 80 2>/dev/null | wc -l)"
from_client="$(tcpdump -nn -r "$S/cap-srv.pcap" src host 100.64.0.2 2>/dev/null | wc -l)"
fwd_replies="$(tcpdump -nn -r "$S/cap-srv.pcap" src host 100.64.0.200 and tcp src port 8080 2>/dev/null | wc -l)"
[ "$from_nat" -gt 0 ] || fail "the server saw no packets from the NAT address: $(cap_show srv)"
[ "$from_client" = 0 ] || fail "$from_client packets reached the server from the client's own address: $(cap_show srv)"
[ "$fwd_replies" -gt 0 ] || fail "port-forward replies did not come from 100.64.0.200:8080: $(cap_show srv)"
for n in client gateway server; do
  rs="$(in_ns "$n" nft list ruleset 2>/dev/null || true)"
  [ -z "$rs" ] || fail "nftables ruleset in $n: $rs"
done
ok "server sees 100.64.0.254 ($from_nat packets, 0 from 100.64.0.2); port forward 100.64.0.200:8080 -> client:80 works; no nftables anywhere"
