#!/usr/bin/env bash
# L7 firewall rule on TLS: `openssl s_client -servername blocked.example.net`
# to an `openssl s_server` behind the gateway is rejected by a `tls_sni` rule
# (the gateway resets the connection when the ClientHello names the blocked
# host: no handshake), while `-servername ok.example.org` completes the
# handshake with the same server.
. "$(dirname "$0")/lib.sh"
need_portcullis
command -v openssl >/dev/null || skip "no openssl"
export LAB_PORTCULLIS_EXTRA='
[[rule]]
chain = "forward"
name = "sni-blocked"
proto = "tcp"
dport = 8443
tls_sni = ["blocked.example.net", "*.blocked.example.net"]
action = "reject"
log = true

[[rule]]
chain = "forward"
name = "tls-8443"
proto = "tcp"
dport = 8443
action = "accept"
'
lab_up
timeout 30 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$S/tls.key" -out "$S/tls.crt" -subj /CN=lab.example -days 1 >/dev/null 2>&1 \
  || fail "openssl req could not make a certificate"
in_ns server timeout 120 openssl s_server -quiet -accept 8443 -cert "$S/tls.crt" -key "$S/tls.key" -www \
  >"$S/s_server.log" 2>&1 &
CAP_PIDS+=("$!")
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"

hello() { # SNI -> s_client output (stdin closed: it ends after the handshake)
  in_ns client timeout 10 openssl s_client -connect "$SERVER:8443" -servername "$1" -brief </dev/null 2>&1 || true
}
out=""
for _ in 1 2 3 4 5; do  # s_server may still be starting
  out="$(hello ok.example.org)"
  grep -q "CONNECTION ESTABLISHED" <<<"$out" && break
  sleep 0.5
done
grep -q "CONNECTION ESTABLISHED" <<<"$out" || fail "handshake with SNI ok.example.org failed: $out"
ok "SNI ok.example.org: handshake completed"
out="$(hello blocked.example.net)"
if grep -q "CONNECTION ESTABLISHED" <<<"$out"; then fail "handshake with SNI blocked.example.net completed: $out"; fi
grep -qiE "reset|errno=104|unexpected eof|write:errno|read:errno" <<<"$out" || fail "SNI blocked.example.net: expected a reset, got: $out"
grep -q "sni-blocked" "$S/logs/gateway.log" || fail "no log line for rule sni-blocked in the gateway log"
ok "SNI blocked.example.net: no handshake, connection reset ($(grep -m1 -iE 'reset|errno|eof' <<<"$out"))"
