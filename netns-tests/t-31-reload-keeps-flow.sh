#!/usr/bin/env bash
# A reload (ctl reload, then SIGHUP) during a running iperf3 flow: the flow
# keeps going (no interval without data, no error), the WireGuard session and
# the tracked flow survive, the rule generation goes up.
. "$(dirname "$0")/lib.sh"
need_portcullis
lab_up
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
gen0="$(ctl status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rule_generation"])')"
hs0="$(in_ns client wg show "$CLIENT_IF" latest-handshakes | awk '{print $2}')"
in_ns client timeout 30 iperf3 -c "$SERVER" -p 5201 -t 8 -i 1 -J > "$S/iperf.json" 2>&1 &
ipid=$!
sleep 2.5
echo "# reloaded by $TEST_NAME" >> "$S/gateway.toml"; cfg_perms
out="$(ctl reload)" || fail "ctl reload failed: $out"
echo "$out" | grep -q "^reloaded" || fail "ctl reload: $out"
sleep 2
kill -HUP "$GW_PID"
wait "$ipid" || fail "iperf3 failed across the reloads: $(tail -c 600 "$S/iperf.json")"
python3 - "$S/iperf.json" <<'PY' || fail "iperf3 intervals show a stall across the reload"
import json, sys
d = json.load(open(sys.argv[1]))
iv = [i["sum"]["bytes"] for i in d["intervals"]]
assert len(iv) >= 7, iv
assert min(iv) > 0, iv
print("interval bytes:", iv)
PY
gen1="$(ctl status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["rule_generation"])')"
[ "$gen1" -eq $((gen0 + 2)) ] || fail "rule generation $gen0 -> $gen1, expected +2 (ctl reload and SIGHUP)"
grep -q "SIGHUP: reloading" "$S/logs/gateway.log" || fail "no SIGHUP reload in the gateway log"
hs1="$(in_ns client wg show "$CLIENT_IF" latest-handshakes | awk '{print $2}')"
[ "$hs1" = "$hs0" ] || say "note: handshake time changed $hs0 -> $hs1 (rekey timer)"
revoked="$(ctl stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["flows_revoked"])')"
[ "$revoked" = 0 ] || fail "$revoked flows revoked by a reload that changed nothing"
ok "iperf3 kept going through ctl reload and SIGHUP (every 1 s interval carried data), generation $gen0 -> $gen1, 0 flows revoked"
