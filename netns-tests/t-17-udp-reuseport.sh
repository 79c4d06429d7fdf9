#!/usr/bin/env bash
# WireGuard receive on threads (`[interface] udp_sockets = 2`,
# io::udp_readers): the gateway binds its port twice with SO_REUSEPORT and
# runs two udp-rx threads; two stock clients fetch 16 MB each at once
# (intact) and upload at once (iperf3); then the first client roams over 16
# source ports (wg set listen-port) with pings answered from every one: the
# kernel spreads the endpoints over both sockets (udp_rx_s0, udp_rx_s1 > 0),
# each socket's datagrams are all counted (their sum is udp_rx) and no
# receive error occurred. With NETNS_RP_SOCKETS=1 the socket checks fail, as
# they should.
. "$(dirname "$0")/lib.sh"
need_portcullis
N="${NETNS_RP_SOCKETS:-2}"
WG_PORT=51820 # the lab gateway's listen port
LAB_PORTCULLIS_IFACE="udp_sockets = $N" lab_up --client2
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
wait_ping client2 "$GW_TUN_ADDR" 10 || fail "client2 cannot ping the gateway"
socks="$(in_ns gateway ss -Hulpn "sport = :$WG_PORT" | grep -c portcullis)" || true
[ "$socks" = 2 ] || fail "expected 2 UDP sockets on port $WG_PORT, found ${socks:-0}: $(in_ns gateway ss -Hulpn)"
readers="$(cat /proc/"$GW_PID"/task/*/comm | grep -c '^udp-rx-')" || true
[ "$readers" = 2 ] || fail "expected 2 udp-rx threads, found ${readers:-0}"
ok "port $WG_PORT bound twice (SO_REUSEPORT), 2 udp-rx threads"

head -c $((16 * 1024 * 1024)) /dev/urandom > "$S/www/rp.bin"
want="$(sha256sum "$S/www/rp.bin" | awk '{print $1}')"
for c in client client2; do
  in_ns "$c" curl -sS --max-time 60 -o "$S/got-$c.bin" "http://$SERVER:80/rp.bin" 2> "$S/curl-$c.err" &
  echo $! > "$S/curl-$c.pid"
done
for c in client client2; do
  wait "$(cat "$S/curl-$c.pid")" || fail "$c: curl failed: $(cat "$S/curl-$c.err")"
  got="$(sha256sum "$S/got-$c.bin" | awk '{print $1}')"
  [ "$got" = "$want" ] || fail "$c: 16 MB file differs (server $want, $c $got)"
done
ok "both clients fetched 16 MB at once, intact"
uploads_at_once 3

# roaming: every new source port is a new 4-tuple, hashed to either socket
# (18 endpoints in all: the chance that all land on one socket is 2^-17)
for p in $(seq 40001 40016); do
  in_ns client wg set "$CLIENT_IF" listen-port "$p" || fail "wg set listen-port $p failed"
  in_ns client ping -q -c 3 -i 0.1 -W 2 "$SERVER" > "$S/ping-$p.out" 2>&1 || fail "pings from source port $p not answered: $(tail -2 "$S/ping-$p.out")"
done
ok "the client roamed over 16 source ports; every ping answered"
read -r s0 s1 rx errs < <(ctl_io udp_rx_s0 udp_rx_s1 udp_rx udp_rx_errors) || fail "ctl stats failed"
[ "$s0" -gt 0 ] && [ "$s1" -gt 0 ] || fail "datagrams were not spread over both sockets (udp_rx_s0=$s0, udp_rx_s1=$s1)"
[ $((s0 + s1)) = "$rx" ] || fail "per-socket counts ($s0 + $s1) do not add up to udp_rx ($rx)"
[ "$errs" = 0 ] || fail "udp_rx_errors=$errs"
ok "datagrams received on socket 0: $s0, socket 1: $s1 (= udp_rx), no receive error"
