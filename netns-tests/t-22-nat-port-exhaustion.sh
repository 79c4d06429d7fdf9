#!/usr/bin/env bash
# 50,000 UDP flows through SNAT with a deliberately small port range (64 ports,
# 40000-40063, onto 100.64.0.253), done by portcullis:
# - exhaustion is counted (ctl stats: drop reason nat_exhausted) and logged;
# - no duplicate mapping: at the server, every external source port carries
#   exactly one client flow (payload "flow SPORT"), all within the range;
# - no panic: the gateway process is alive and answers ctl;
# - an existing flow (a UDP exchange every 100 ms, bound before the flood)
#   keeps working during the flood, and new TCP connections still work;
# - `nft list ruleset` is empty in every namespace of the lab.
. "$(dirname "$0")/lib.sh"
need_gateway
[ "$GATEWAY_KIND" = portcullis ] || skip "portcullis NAT only"
export LAB_PORTCULLIS_EXTRA='
[[rule]]
chain = "forward"
name = "udp-9000"
from = "client"
to = "tun"
proto = "udp"
dport = 9000
action = "accept"

[[nat]]
kind = "snat"
name = "small-pool"
from = "client"
to = "tun"
proto = "udp"
dport = 9000
to_address = "100.64.0.253"
to_ports = "40000-40063"'
lab_up
U="$NT_DIR/udpflows.py"
FLOWS="${NETNS_UDP_FLOWS:-50000}"
wait_ping client "$GW_TUN_ADDR" 15 || fail "client cannot ping the gateway"
in_ns server timeout 100 python3 "$U" server 0.0.0.0 9000 90 "$S/udp-server.log" >/dev/null 2>&1 &
CAP_PIDS+=("$!")
for _ in $(seq 100); do in_ns server ss -Hlun "sport = :9000" | grep -q 9000 && break; sleep 0.05; done

# the existing flow: bound first, then kept alive through the flood
in_ns client timeout 60 python3 "$U" keep "$SERVER" 9000 5000 25 0.1 > "$S/keep.json" 2>&1 &
keep_pid=$!
CAP_PIDS+=("$keep_pid")
end=$(( $(ms_now) + 5000 ))
until grep -q "keep" "$S/udp-server.log" 2>/dev/null; do
  [ "$(ms_now)" -lt "$end" ] || fail "the long-lived UDP flow did not reach the server"
  sleep 0.05
done
sleep 1

t0=$(ms_now)
fl="$(in_ns client timeout 60 python3 "$U" flood "$SERVER" 9000 10000 "$FLOWS" 10000)" || fail "flood sender failed: $fl"
say "flood: $fl ($(( $(ms_now) - t0 )) ms)"
r="$(curl_probe client "http://$SERVER:80/" 5)"; rc="${r%% *}"
[ "$rc" = 0 ] || fail "after the flood a new TCP connection failed: exit $rc ($(cat "$S/last_curl_err"))"
wait "$keep_pid" || true
keep="$(cat "$S/keep.json")"
sleep 0.5

gw_pid="$(cat "$S/pids" | awk '$1=="gateway"{print $2}')"
kill -0 "$gw_pid" 2>/dev/null || fail "the gateway process is gone"
! grep -q "panicked" "$S/logs/gateway.log" || fail "the gateway panicked: $(grep -m3 panicked "$S/logs/gateway.log")"
st="$(ctl stats --json)" || fail "ctl stats failed: $st"
exhausted="$(echo "$st" | python3 -c 'import json,sys; print(json.load(sys.stdin)["drop_reasons"].get("nat_exhausted",0))')"
logged="$(grep -c "exhausted" "$S/logs/gateway.log" || true)"

python3 - "$S/udp-server.log" "$FLOWS" "$exhausted" "$keep" <<'PY' || fail "server-side mapping check failed"
import json, sys
log, flows, exhausted, keep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
by_port = {}
keep_ports = set()
n = 0
for line in open(log):
    parts = line.split()
    if len(parts) != 5 or parts[0] != "RECV":
        continue
    ip, port, kind, val = parts[1], int(parts[2]), parts[3], parts[4]
    assert ip == "100.64.0.253", ("a datagram arrived from %s, not the SNAT address" % ip, line)
    assert 40000 <= port <= 40063, ("external port outside 40000-40063", line)
    if kind == "keep":
        keep_ports.add(port)
        continue
    n += 1
    by_port.setdefault(port, set()).add(val)
dups = {p: v for p, v in by_port.items() if len(v) > 1}
assert not dups, ("external ports carrying several client flows", dict(list(dups.items())[:5]))
assert len(keep_ports) == 1, ("the long-lived flow changed its external port", keep_ports)
assert not (keep_ports & set(by_port)), ("a flood flow got the long-lived flow's external port", keep_ports)
# 64 ports, one held by the long-lived flow: at most 63 flood flows get through
assert 0 < len(by_port) <= 63, len(by_port)
assert n == len(by_port), (n, len(by_port))
assert exhausted >= flows - 63 - flows // 100, ("exhaustion not counted", exhausted, flows)
assert keep["sent"] >= 200 and keep["answered"] >= 0.95 * keep["sent"], ("the existing flow suffered", keep)
print("ports used by flood flows: %d (each one flow), long-lived flow on %s, exhausted %d, existing flow %s"
      % (len(by_port), sorted(keep_ports), exhausted, keep))
PY
[ "$logged" -ge 1 ] || fail "no exhaustion line in the gateway log"
for n in client gateway server; do
  rs="$(in_ns "$n" nft list ruleset 2>/dev/null || true)"
  [ -z "$rs" ] || fail "nftables ruleset in $n: $rs"
done
ok "$FLOWS UDP flows into a 64-port SNAT pool: nat_exhausted=$exhausted, $logged exhaustion log lines, no duplicate mapping, no panic, existing flow $keep, TCP still works; no nftables anywhere"
