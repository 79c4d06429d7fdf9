#!/usr/bin/env bash
# L7 firewall rule on HTTP keep-alive: an `http_host` reject rule applies to
# every request on a connection, not only the first. curl sends two requests
# over one kept-alive connection to an HTTP/1.1 server (python3 http.server
# --protocol HTTP/1.1 in the server namespace): Host ok.example.org, then
# Host blocked.example.net. The first is answered; the second is rejected on
# the same connection (curl sees it reset) and never reaches the server;
# three allowed requests on one connection (one a POST with a body that
# looks like a blocked request) are all answered over a single connection.
. "$(dirname "$0")/lib.sh"
need_portcullis
PORT=8081
export LAB_PORTCULLIS_EXTRA="
[[rule]]
chain = \"forward\"
name = \"host-blocked\"
proto = \"tcp\"
dport = $PORT
http_host = [\"blocked.example.net\", \"*.blocked.example.net\"]
action = \"reject\"
log = true

[[rule]]
chain = \"forward\"
name = \"http-$PORT\"
proto = \"tcp\"
dport = $PORT
action = \"accept\"
"
lab_up
in_ns server timeout 120 python3 -m http.server --protocol HTTP/1.1 --bind 0.0.0.0 \
  --directory "$S/www" "$PORT" > "$S/http11.log" 2>&1 &
CAP_PIDS+=("$!")
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
url="http://$SERVER:$PORT/index.html"
for _ in $(seq 20); do  # the server may still be starting
  in_ns client curl -sS --max-time 2 -o /dev/null "$url" 2>/dev/null && break
  sleep 0.2
done

# allowed requests share one connection (so the later ones are read, and
# a body that looks like a blocked request is skipped, not decided)
body="$(printf 'GET / HTTP/1.1\r\nHost: blocked.example.net\r\n\r\n')"
out="$(in_ns client curl -sS --max-time 10 -w '%{http_code} %{num_connects}\n' -o /dev/null \
  -H 'Host: ok.example.org' "$url" \
  --next -w '%{http_code} %{num_connects}\n' -o /dev/null -H 'Host: www.example.org' "$url" \
  --next -w '%{http_code} %{num_connects}\n' -o /dev/null -H 'Host: ok.example.org' --data-binary "$body" "$url" \
  2> "$S/curl-ok.err")" || fail "allowed requests failed: $(cat "$S/curl-ok.err")"
# POST to a static file server: 501, still an answer on the same connection
[ "$(echo "$out" | tr '\n' ' ')" = "200 1 200 0 501 0 " ] \
  || fail "three allowed requests on one connection: expected '200 1 200 0 501 0', got '$(echo "$out" | tr '\n' ' ')'"
ok "three allowed requests answered over one connection (codes and connects: $(echo "$out" | tr '\n' ' '))"

before="$(grep -c 'blocked' "$S/http11.log" || true)"
r=0
out="$(in_ns client curl -sS --max-time 10 -w '%{http_code} %{num_connects}\n' -o /dev/null \
  -H 'Host: ok.example.org' "$url" \
  --next -w '%{http_code} %{num_connects}\n' -o /dev/null -H 'Host: www.blocked.example.net' "$url" \
  2> "$S/curl-bad.err")" || r=$?
first="$(echo "$out" | head -1)"
[ "$first" = "200 1" ] || fail "the first request (ok.example.org) was not answered on a new connection: '$out' $(cat "$S/curl-bad.err")"
[ "$r" != 0 ] || fail "the second request (blocked Host on the same connection) succeeded: '$out'"
grep -qiE "reset|recv failure|empty reply" "$S/curl-bad.err" \
  || fail "the second request did not end in a reset: exit $r, $(cat "$S/curl-bad.err")"
ok "Host blocked.example.net on the kept-alive connection rejected (curl exit $r: $(tr '\n' ' ' < "$S/curl-bad.err"))"
sleep 0.5
after="$(grep -c 'blocked' "$S/http11.log" || true)"
[ "$after" = "$before" ] || fail "the blocked request reached the server: $(tail -3 "$S/http11.log")"
grep -q "host-blocked" "$S/logs/gateway.log" || fail "no log line for rule host-blocked in the gateway log"
ok "the server never saw it; logged by rule host-blocked"
