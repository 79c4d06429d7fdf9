#!/usr/bin/env bash
# A reload that revokes the iperf3 port cuts the running iperf3 flow: after
# the reload no more data arrives, the gateway counts the revoked flow, and a
# new connection to that port is refused.
. "$(dirname "$0")/lib.sh"
need_portcullis
lab_up
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
in_ns client timeout 30 iperf3 -c "$SERVER" -p 5201 -t 10 -i 1 -J > "$S/iperf.json" 2>&1 &
ipid=$!
sleep 3
sed -i 's/dport = \[80, 8080, 5201\]/dport = [80, 8080]/' "$S/gateway.toml"; cfg_perms
grep -q 'dport = \[80, 8080\]$' "$S/gateway.toml" || fail "could not edit the staff rule in $S/gateway.toml"
out="$(ctl reload)" || fail "ctl reload failed: $out"
wait "$ipid"; rc=$?
python3 - "$S/iperf.json" <<'PY' || fail "the revoked flow kept carrying data"
import json, sys
d = json.load(open(sys.argv[1]))
iv = [i["sum"]["bytes"] for i in d.get("intervals", [])]
print("interval bytes:", iv, "error:", d.get("error"))
assert len(iv) >= 2 and iv[0] > 0, iv
# intervals that start 1 s or more after the reload carry nothing
assert all(b == 0 for b in iv[4:]), iv
PY
revoked="$(ctl stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["flows_revoked"])')"
[ "$revoked" -ge 1 ] || fail "the gateway counted $revoked revoked flows"
r="$(curl_probe client "http://$SERVER:5201/" 2)"; rc2="${r%% *}"
[ "$rc2" = 28 ] || fail "a new connection to the revoked port: expected a timeout (exit 28), got $rc2"
check_allowed_http client 80
ok "reload revoked port 5201: the running iperf3 stopped carrying data (exit $rc), $revoked flow(s) revoked, new connections time out, port 80 still works"
