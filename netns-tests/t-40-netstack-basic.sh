#!/usr/bin/env bash
# Netstack (rootless) mode: the gateway runs as nobody with no capabilities,
# without a TUN device and without kernel forwarding, and a stock
# wireguard-go client still reaches the HTTP server and iperf3 on the server
# side; the server sees the gateway's own address; a rejected port gets an
# RST at once, a dropped one times out; ICMP echo is relayed through ping
# sockets; the gateway's tunnel address answers ping itself.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netstack.sh"
need_gateway
ns_lab_up
check_unprivileged
in_ns gateway ip -o link show type tun | grep -q . && fail "a TUN device exists in the gateway namespace"
[ "$(in_ns gateway sysctl -n net.ipv4.ip_forward)" = 0 ] || fail "ip_forward is on in the gateway namespace"
ok "no TUN device, ip_forward=0"
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway's tunnel address"
ok "the gateway's tunnel address answers ping"
read -r rc ms code < <(curl_probe client "http://$SERVER:80/" 5)
[ "$rc" = 0 ] && [ "$code" = 200 ] || fail "HTTP to the server: curl exit $rc, status $code ($(cat "$S/last_curl_err"))"
grep -q "hello" "$S/last_body" || fail "unexpected body: $(head -c 200 "$S/last_body")"
ok "HTTP GET through the netstack in ${ms} ms"
grep -Eq '^(::ffff:)?203\.0\.113\.1 ' "$S/logs/http-80.log" || fail "the server did not see the gateway's address: $(tail -n 3 "$S/logs/http-80.log")"
ok "the server saw the gateway's own address 203.0.113.1 (re-originated from a host socket)"
in_ns client ping -c 2 -W 2 "$SERVER" >/dev/null || fail "ping to the server through the ping-socket relay failed"
ok "ICMP echo to the server relayed"
read -r rc ms _ < <(curl_probe client "http://$SERVER:81/" 3)
[ "$rc" = 7 ] && [ "$ms" -lt 1000 ] || fail "port 81 (reject): curl exit $rc after ${ms} ms, expected 7 (refused) at once"
ok "port 81 refused with an RST in ${ms} ms"
read -r rc ms _ < <(curl_probe client "http://$SERVER:82/" 2)
[ "$rc" = 28 ] || fail "port 82 (drop): curl exit $rc, expected 28 (timeout)"
ok "port 82 dropped (timeout)"
out="$(in_ns client timeout 20 iperf3 -c "$SERVER" -t 3 -f m 2>&1)" || fail "iperf3 failed: $out"
rate="$(echo "$out" | awk '/receiver/ {print $7}')"
ok "iperf3 through the netstack: $rate Mbit/s"
out="$(in_ns client timeout 20 iperf3 -c "$SERVER" -t 3 -R -f m 2>&1)" || fail "iperf3 -R failed: $out"
rate="$(echo "$out" | awk '/receiver/ {print $7}')"
ok "iperf3 -R (server to client) through the netstack: $rate Mbit/s"
check_unprivileged
