#!/usr/bin/env bash
# portcullis ctl over the control socket: status, peers, rules (hit counters),
# conntrack (filter, flush; the flushed flows' EVE flow records), stats as
# root, human and --json output; a
# malformed request gets an error reply; a silent client does not block
# others; ctl as an unprivileged user is refused with a permission error.
. "$(dirname "$0")/lib.sh"
need_portcullis
lab_up
check_allowed_http client 80
[ -S "$S/control.sock" ] || fail "no control socket at $S/control.sock"
mode="$(stat -c %a "$S/control.sock")"
[ "$mode" = 600 ] || fail "control socket mode $mode, expected 600"

out="$(ctl status)" || fail "ctl status failed: $out"
echo "$out" | grep -q "peers:      2 (1 with a session)" || fail "ctl status: unexpected output: $out"
ctl status --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["flows"]>=1 and d["protocol"]==1, d' \
  || fail "ctl status --json does not parse or lacks flows"
ok "ctl status: $(echo "$out" | grep flows:)"

ctl peers --json | python3 -c '
import json,sys
p={x["name"]:x for x in json.load(sys.stdin)}
c=p["client"]; assert c["session"] and c["rx_bytes"]>0 and c["tx_bytes"]>0 and c["endpoint"].startswith("198.51.100.2:"), c
assert c["allowed_ips"]==["100.64.0.2/32","2001:db8:64::2/128"], c
assert not p["client2"]["session"]' || fail "ctl peers: $(ctl peers)"
ok "ctl peers: client has a session, bytes both ways, endpoint and allowed IPs"

hits="$(ctl rules --json | python3 -c 'import json,sys; print([r["packets"] for r in json.load(sys.stdin) if r["name"]=="staff"][0])')"
[ "$hits" -gt 0 ] || fail "rule staff has no hits after an allowed curl: $(ctl rules)"
ctl rules | grep -q "^forward .* staff .*accept" || fail "ctl rules human output: $(ctl rules)"
ok "ctl rules: rule staff counted $hits packets"

# a long-lived flow to list, filter and flush
in_ns client timeout 20 iperf3 -c "$SERVER" -p 5201 -t 15 -b 1M >/dev/null 2>&1 &
ipid=$!
sleep 2
n="$(ctl conntrack --peer client --port 5201 --state established --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["matched"])')"
[ "$n" -ge 1 ] || fail "ctl conntrack --port 5201 --state established matched $n flows: $(ctl conntrack)"
none="$(ctl conntrack --addr 192.0.2.99 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["matched"])')"
[ "$none" = 0 ] || fail "a filter on an unrelated address matched $none flows"
ctl conntrack --port 5201 | grep -q "tcp .*:5201" || fail "ctl conntrack human output: $(ctl conntrack)"
fl="$(ctl conntrack --port 5201 --flush)" || fail "flush failed: $fl"
echo "$fl" | grep -q "^flushed [1-9]" || fail "flush: $fl"
left="$(ctl conntrack --port 5201 --state established --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["matched"])')"
kill "$ipid" 2>/dev/null || true; wait "$ipid" 2>/dev/null || true
[ "$left" = 0 ] || fail "after the flush $left established flows to 5201 remain"
ok "ctl conntrack: $n flow(s) matched by port/peer/state, unrelated filter 0, $fl"

# the flushed flows ended: EVE flow records with counters both ways
sleep 0.6
python3 - "$S/ops/eve.json" <<'PY' || fail "no EVE flow record for the flushed iperf3 flow"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
flows = [r for r in recs if r["event_type"] == "flow" and r.get("dest_port") == 5201]
assert flows, [r["event_type"] for r in recs]
f = max(flows, key=lambda r: r["flow"]["bytes_toserver"])
assert f["flow"]["reason"] == "removed" and f["flow"]["pkts_toserver"] > 0 and f["flow"]["pkts_toclient"] > 0, f
assert f["portcullis"]["ingress"] == "client" and f["portcullis"]["egress"] == "tun" and f["portcullis"]["rule"] == "forward/staff", f
assert f["portcullis"]["duration_ms"] >= 1000, f
print("EVE flow:", json.dumps(f["flow"]), f["portcullis"]["duration_ms"], "ms")
PY
ok "EVE flow records for the flushed flows (bytes/packets both ways, duration, rule, peer)"

ctl stats | grep -q "^received" || fail "ctl stats: $(ctl stats)"
ctl stats --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["received"][0]>0 and d["io"]["udp_rx"]>0, d' || fail "ctl stats --json"
out="$(ctl blocklist 2>&1)" || fail "ctl blocklist failed: $out"
echo "$out" | grep -q "^0 entries" || fail "ctl blocklist on a fresh gateway: $out"
n="$(ctl blocklist --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["entries"]))')"
[ "$n" = 0 ] || fail "ctl blocklist --json: $n entries on a fresh gateway"
ok "ctl stats works; ctl blocklist lists 0 entries (block/unblock: t-51)"

# malformed requests and a silent client (python: raw socket)
python3 - "$S/control.sock" <<'PY' || fail "malformed/silent client check failed"
import json, socket, sys, time, threading
path = sys.argv[1]
silent = socket.socket(socket.AF_UNIX); silent.connect(path)   # says nothing
def ask(data):
    s = socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect(path)
    s.sendall(data); out = b""
    while True:
        b = s.recv(65536)
        if not b: break
        out += b
    return json.loads(out)
t = time.time()
r = ask(b'{"v":1,"cmd":"status"}\n'); assert r["ok"], r
assert time.time() - t < 1.5, "blocked by the silent client"
for bad in [b"garbage\n", b'{"v":9,"cmd":"status"}\n', b'{"v":1,"cmd":"nope"}\n', b"\xff\xfe\n", b"[1,2]\n"]:
    r = ask(bad); assert not r["ok"] and r["error"], (bad, r)
r = ask(b'{"v":1,"cmd":"status"}\n'); assert r["ok"], r
print("malformed requests answered with errors; status answered in %.0f ms beside a silent client" % ((time.time()-t)*1000))
PY
ok "malformed requests get error replies; a silent client does not block others; gateway still answers"

# unprivileged: refused with a clear message
if out="$(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups "$PORTCULLIS_BIN" ctl --socket "$S/control.sock" status 2>&1)"; then
  fail "ctl as nobody succeeded: $out"
fi
echo "$out" | grep -q "permission denied" || fail "ctl as nobody: expected a permission error, got: $out"
ok "ctl as nobody refused: $out"
