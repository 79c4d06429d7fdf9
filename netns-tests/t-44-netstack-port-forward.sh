#!/usr/bin/env bash
# Netstack mode: a host port forward (203.0.113.1:9000 on the gateway side ->
# 100.64.0.2:8000, a service on the client) carries an HTTP request from the
# server namespace to the client, through the pipeline's output chain.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netstack.sh"
need_gateway
ns_lab_up
mkdir -p "$S/clientwww"
echo "served by the client $ID" > "$S/clientwww/index.html"
in_ns client timeout 60 "$PY" -m http.server --bind "$CLIENT_ADDR" --directory "$S/clientwww" 8000 > "$S/clienthttp.log" 2>&1 &
CAP_PIDS+=("$!")
end=$(( $(ms_now) + 10000 ))
until in_ns client ss -Hltn "sport = :8000" | grep -q LISTEN; do
  [ "$(ms_now)" -lt "$end" ] || fail "client HTTP server did not start"
  sleep 0.05
done
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway (handshake)"
body="$(in_ns server curl -sS --max-time 10 "http://203.0.113.1:9000/")" || fail "curl through the port forward failed"
[ "$body" = "served by the client $ID" ] || fail "unexpected body through the forward: $body"
ok "host port 9000 -> client 100.64.0.2:8000: '$body'"
grep -Eq "^(::ffff:)?$GW_TUN_ADDR " "$S/clienthttp.log" || fail "the client did not see the gateway's tunnel address: $(cat "$S/clienthttp.log")"
ok "the client saw the connection from the gateway's tunnel address $GW_TUN_ADDR"
