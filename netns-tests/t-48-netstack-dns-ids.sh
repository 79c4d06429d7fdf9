#!/usr/bin/env bash
# Netstack mode: the gateway's DNS relay is subject to the IDS. With an IDS
# signature `drop dns ... (dns.query; content:"blocked.example")` in prevent
# mode, a query for www.blocked.example to the gateway's tunnel address gets
# no answer (over UDP and TCP) and never reaches the resolver, while another
# name is answered; the alert names the signature. Gateway as nobody, no
# capabilities.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netstack.sh"
need_gateway
# The rule file must exist before the gateway starts (the lab's state
# directory does not yet): a directory of our own, readable by nobody.
RULES_DIR="$(mktemp -d /tmp/t48-rules.XXXXXX)"
trap 'rc=$?; rm -rf "$RULES_DIR"; (exit $rc); nt_cleanup' EXIT
chmod 0755 "$RULES_DIR"
cat > "$RULES_DIR/dns.rules" <<'RULES'
drop dns any any -> any any (msg:"t-48 blocked name"; dns.query; content:"blocked.example"; nocase; sid:4800048; rev:1;)
RULES
chmod 0644 "$RULES_DIR/dns.rules"
export LAB_PORTCULLIS_EXTRA="
[ids]
enabled = true
mode = \"prevent\"
rule_files = [\"$RULES_DIR/dns.rules\"]
"
ns_lab_up
check_unprivileged
tool_bg dns server dns-server "$SERVER" --seconds 60
wait_log "$S/dns.log" "ready" 10 || fail "DNS responder did not start: $(cat "$S/dns.log")"
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
a="$(tool client dns-query udp "$GW_TUN_ADDR" www.example.test)" || fail "DNS over UDP for an allowed name failed"
[ "$a" = 192.0.2.123 ] || fail "DNS over UDP: answer '$a'"
ok "www.example.test over UDP answered ($a)"
seen="$(grep -c 'query from' "$S/dns.log" || true)"
if a="$(tool client dns-query udp "$GW_TUN_ADDR" www.blocked.example 2>/dev/null)"; then
  fail "www.blocked.example over UDP was answered ($a)"
fi
ok "www.blocked.example over UDP: no answer"
if a="$(tool client dns-query tcp "$GW_TUN_ADDR" www.blocked.example 2>/dev/null)"; then
  fail "www.blocked.example over TCP was answered ($a)"
fi
ok "www.blocked.example over TCP: no answer"
[ "$(grep -c 'query from' "$S/dns.log" || true)" = "$seen" ] || fail "a blocked query reached the resolver: $(tail -n 3 "$S/dns.log")"
ok "the resolver never saw the blocked queries"
a="$(tool client dns-query tcp "$GW_TUN_ADDR" www.example.test)" || fail "DNS over TCP for an allowed name failed after the blocks"
[ "$a" = 192.0.2.123 ] || fail "DNS over TCP: answer '$a'"
ok "www.example.test over TCP still answered ($a)"
end=$(( $(ms_now) + 5000 ))
until grep -rqs '4800048' "$S/logs/gateway.log" "$S/ops/" 2>/dev/null; do
  [ "$(ms_now)" -lt "$end" ] || fail "no IDS alert for sid 4800048 in the gateway log or EVE stream"
  sleep 0.1
done
n="$(grep -rhs '4800048' "$S/logs/gateway.log" "$S/ops/" | grep -c blocked || true)"
[ "$n" -ge 2 ] || fail "expected an alert per blocked query (UDP and TCP), found $n: $(grep -rhs 4800048 "$S/logs/gateway.log" "$S/ops/" | head -3)"
ok "IDS alerts for sid 4800048 ($n lines)"
check_unprivileged
