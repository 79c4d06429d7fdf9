#!/usr/bin/env bash
# A reload that revokes the iperf3 port cuts the running iperf3 flow: after
# the reload no more data arrives, the gateway counts the revoked flow, and a
# new connection to that port is refused.
. "$(dirname "$0")/lib.sh"
need_portcullis
lab_up
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
in_ns client timeout 16 iperf3 -c "$SERVER" -p 5201 -t 10 -i 1 --forceflush > "$S/iperf.txt" 2>&1 &
ipid=$!
sleep 3
sed -i 's/dport = \[80, 8080, 5201\]/dport = [80, 8080]/' "$S/gateway.toml"; cfg_perms
grep -q 'dport = \[80, 8080\]$' "$S/gateway.toml" || fail "could not edit the staff rule in $S/gateway.toml"
out="$(ctl reload)" || fail "ctl reload failed: $out"
rc=0; wait "$ipid" || rc=$?
# iperf3 -i 1 lines: "[  5]   0.00-1.00   sec  12.3 MBytes  103 Mbits/sec ..."
python3 - "$S/iperf.txt" <<'PY' || fail "the revoked flow kept carrying data: $(cat "$S/iperf.txt")"
import re, sys
iv = []
for line in open(sys.argv[1]):
    m = re.match(r"\[\s*\d+\]\s+(\d+\.\d+)-(\d+\.\d+)\s+sec\s+([\d.]+)\s+(\w)?Bytes", line)
    if m and float(m.group(2)) - float(m.group(1)) < 1.5:
        mult = {"K": 1e3, "M": 1e6, "G": 1e9}.get(m.group(4) or "", 1)
        iv.append(float(m.group(3)) * mult)
print("interval bytes:", iv)
assert len(iv) >= 2 and iv[0] > 0, iv
# the reload happens ~3 s in: intervals from 4 s on carry nothing
assert all(b == 0 for b in iv[4:]), iv
PY
revoked="$(ctl stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["flows_revoked"])')"
[ "$revoked" -ge 1 ] || fail "the gateway counted $revoked revoked flows"
r="$(curl_probe client "http://$SERVER:5201/" 2)"; rc2="${r%% *}"
[ "$rc2" = 28 ] || fail "a new connection to the revoked port: expected a timeout (exit 28), got $rc2"
check_allowed_http client 80
ok "reload revoked port 5201: the running iperf3 stopped carrying data (exit $rc), $revoked flow(s) revoked, new connections time out, port 80 still works"
