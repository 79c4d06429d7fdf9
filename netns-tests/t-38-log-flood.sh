#!/usr/bin/env bash
# A log flood stays within the configured log rate: 3000 SYNs in ~3 s
# against the reject rule (log = true) with [events] rate_per_sec = 20,
# burst = 20. The rule log lines and EVE records stay within
# 20/s * elapsed + 20 (+ the records of the idle seconds around it), and a
# summary of what was suppressed is logged.
. "$(dirname "$0")/lib.sh"
need_portcullis
LAB_PORTCULLIS_EVENTS='rate_per_sec = 20
burst = 20' lab_up
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
sleep 1
l0="$(grep -c 'portcullis::rule' "$S/logs/gateway.log" || true)"
e0="$(wc -l < "$S/ops/eve.json")"
t0=$(ms_now)
in_ns client timeout 20 hping3 -q -S -p 81 -i u1000 -c 3000 "$SERVER" >/dev/null 2>&1 || true
sleep 1.5
secs=$(( ($(ms_now) - t0 + 999) / 1000 ))
l1="$(grep -c 'portcullis::rule' "$S/logs/gateway.log" || true)"
e1="$(wc -l < "$S/ops/eve.json")"
lines=$((l1 - l0)); eve=$((e1 - e0))
max=$(( 20 * secs + 20 + 5 ))
rej="$(ctl rules --json | python3 -c 'import json,sys; print([r["packets"] for r in json.load(sys.stdin) if r["name"]=="reject-81"][0])')"
[ "$rej" -ge 2500 ] || fail "only $rej packets hit the reject rule: the flood did not happen"
[ "$lines" -le "$max" ] || fail "$lines rule log lines in ${secs} s, limit $max"
[ "$lines" -ge 5 ] || fail "only $lines rule log lines: logging is not working"
[ "$eve" -le $((max + 5)) ] || fail "$eve EVE records in ${secs} s, limit $max"
grep -q "log rate limit: suppressed" "$S/logs/gateway.log" || fail "no suppression summary logged"
ok "$rej flood packets hit the logging rule; $lines log lines and $eve EVE records in ${secs} s (limit $max); summary: $(grep -o 'log rate limit: suppressed.*' "$S/logs/gateway.log" | head -1)"
