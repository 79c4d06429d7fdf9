#!/usr/bin/env bash
# An invalid config is rejected whole by ctl reload and by SIGHUP: every
# problem is reported, the rule generation, the rules and their counters stay
# exactly as they were, and traffic keeps flowing.
. "$(dirname "$0")/lib.sh"
need_portcullis
lab_up
check_allowed_http client 80
cp "$S/gateway.toml" "$S/gateway.toml.good"
before="$(ctl rules --json)"; gen0="$(ctl status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rule_generation"])')"
cat >> "$S/gateway.toml" <<'EOF'

[[rule]]
chain = "forward"
from = "nobody-by-this-name"
dport = 99999
action = "accept"

[metrics]
listen = "not an address"
EOF
cfg_perms
if out="$(ctl reload 2>&1)"; then fail "an invalid reload succeeded: $out"; fi
echo "$out" | grep -q "reload rejected (3 problems)" || fail "expected 3 problems: $out"
echo "$out" | grep -q "nobody-by-this-name" || fail "the unknown zone is not reported: $out"
echo "$out" | grep -q "metrics.listen" || fail "the bad metrics address is not reported: $out"
after="$(ctl rules --json)"; gen1="$(ctl status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rule_generation"])')"
[ "$before" = "$after" ] || fail "rules or counters changed after a rejected reload"
[ "$gen0" = "$gen1" ] || fail "rule generation changed $gen0 -> $gen1"
kill -HUP "$GW_PID"; sleep 1
grep -q "reload rejected" "$S/logs/gateway.log" || fail "SIGHUP with an invalid config: no rejection logged"
[ "$(ctl status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rule_generation"])')" = "$gen0" ] || fail "SIGHUP changed the generation"
check_allowed_http client 80
r="$(curl_probe client "http://$SERVER:81/" 3)"; [ "${r%% *}" = 7 ] || fail "the reject rule no longer works"
ok "invalid reload rejected with all 3 problems (ctl and SIGHUP); generation $gen0 and rule counters unchanged; traffic still flows"
