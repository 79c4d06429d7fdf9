#!/usr/bin/env bash
# Anomaly detection and automatic blocking: `nmap -sS` (a bounded scan: 120
# ports, -T4, no retries, time-bounded) from the lab client through the
# gateway at the server gets the client blocked by the port_scan detector
# (threshold 20 distinct ports in 10 s): `ctl blocklist` lists it (origin
# anomaly), the EVE anomaly line names the detector, count, threshold and
# peer, a ping from the client fails; after the 6 s TTL the entry expires and
# ping works again.
. "$(dirname "$0")/lib.sh"
need_portcullis
command -v nmap >/dev/null || skip "nmap not installed"
export LAB_PORTCULLIS_EXTRA='[ids]
eve_log = "ops/ids-eve.json"

[ids.anomaly]
block = "6s"

[ids.anomaly.port_scan]
threshold = 20
window = "10s"'
lab_up
wait_ping client "$SERVER" 10 || fail "client cannot ping the server before the scan"
ok "client pings the server before the scan"

in_ns client timeout 15 nmap -sS -n -Pn -T4 --max-retries 0 --host-timeout 10s -p 1000-1119 "$SERVER" \
  > "$S/nmap.log" 2>&1 &
npid=$!
blocked=0
end=$(( $(ms_now) + 8000 ))
while [ "$(ms_now)" -lt "$end" ]; do
  if ctl blocklist --json | python3 -c '
import json,sys
d=json.load(sys.stdin)
e=[x for x in d["entries"] if x["target"]=="100.64.0.2" and x["origin"]=="anomaly"]
sys.exit(0 if e else 1)'; then blocked=1; break; fi
  sleep 0.2
done
[ "$blocked" = 1 ] || fail "the scanner was not blocked: $(ctl blocklist)"
ok "ctl blocklist lists the scanner: $(ctl blocklist | grep 100.64.0.2)"
in_ns client ping -c1 -W1 "$SERVER" >/dev/null 2>&1 && fail "the blocked client can still ping the server"
ok "ping from the blocked client fails"
kill "$npid" 2>/dev/null || true; wait "$npid" 2>/dev/null || true

python3 - "$S/ops/ids-eve.json" <<'PY' || fail "no EVE anomaly line for the scan: $(cat "$S/ops/ids-eve.json" 2>/dev/null)"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
a = [r for r in recs if r["event_type"] == "anomaly" and r["anomaly"]["event"] == "port_scan"]
assert a, recs
r = a[0]
assert r["src_ip"] == "100.64.0.2" and r["wg_peer"] == "client", r
assert r["anomaly"]["count"] == 20 and r["anomaly"]["threshold"] == 20, r
assert r["anomaly"]["action"] == "blocked", r
PY
ok "EVE anomaly line: port_scan, count 20 = threshold, wg_peer client"

# the block expires after its TTL (plus the once-a-second housekeeping)
wait_ping client "$SERVER" 15 || fail "ping still fails after the TTL: $(ctl blocklist)"
n="$(ctl blocklist --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["entries"]))')"
[ "$n" = 0 ] || fail "blocklist not empty after the TTL: $(ctl blocklist)"
ok "unblocked after the TTL: ping works, blocklist empty"
