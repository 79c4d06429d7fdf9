#!/usr/bin/env bash
# Load-balanced DNAT over 3 backend namespaces (scripts/lab --backends 3; the
# virtual service 192.0.2.100, see the lab header), done by portcullis:
# - least-connections with long- and short-lived connections: 4 held
#   connections land 2/1/1, then 32 short ones come and go, then 2 more held
#   ones go to the two backends with fewer live connections (2/2/2; plain
#   round-robin would give 3/2/1);
# - weighted 1:2:3: 3,000 connections land per the weights within +-5 %;
# - source-hash: each of two clients sticks to one backend (60 connections each);
# - a drained (down) backend gets no new flows (60 connections, 0 on be3);
# - `ctl nat` lists the bindings (192.0.2.100:8001 -> 192.0.2.1x:80) with
#   filters; `ctl nat drain 192.0.2.12:80 --rule lb-rr` takes be2 out of the
#   round-robin service :8004 at run time (0 of 30 new flows), `undrain` puts
#   it back;
# - TCP connect health checks (every 500 ms): be2's server stopped -> the
#   gateway marks it unhealthy and new flows to :8004 all go to be1/be3 with no
#   failed connection;
# - `nft list ruleset` is empty in every namespace of the lab.
. "$(dirname "$0")/lib.sh"
need_gateway
[ "$GATEWAY_KIND" = portcullis ] || skip "portcullis load-balanced DNAT only"
export LAB_LB_HEALTH='health_check = { interval = "500ms", timeout = "300ms" }'
lab_up --client2 --backends 3
VIP=192.0.2.100
LB="$NT_DIR/lbclient.py"
wait_ping client "$GW_TUN_ADDR" 15 || fail "client cannot ping the gateway"
wait_ping client2 "$GW_TUN_ADDR" 15 || fail "client2 cannot ping the gateway"
t_start=$(ms_now)

holds() { # held connections per backend: "n1 n2 n3"
  local i out=""
  for i in 1 2 3; do out="$out $(grep -c 'REQ .* /hold' "$S/logs/be$i-http.log" || true)"; done
  echo "${out# }"
}
hold_total() { local a b c; read -r a b c <<< "$(holds)"; echo $((a + b + c)); }
open_hold() { # one held connection to :8001, wait until a backend has it
  local before; before="$(hold_total)"
  in_ns client timeout 40 python3 "$LB" "$VIP" 8001 1 --threads 1 --path "/hold?s=25" --deadline 35 --timeout 35 >/dev/null 2>&1 &
  CAP_PIDS+=("$!")
  local end=$(( $(ms_now) + 5000 ))
  until [ "$(hold_total)" -gt "$before" ]; do
    [ "$(ms_now)" -lt "$end" ] || fail "a held connection to $VIP:8001 reached no backend"
    sleep 0.05
  done
}

# --- least-connections, long and short connections
for _ in 1 2 3 4; do open_hold; done
h4="$(holds)"
[ "$h4" = "2 1 1" ] || fail "least-connections: 4 held connections landed '$h4', expected '2 1 1'"
short="$(in_ns client python3 "$LB" "$VIP" 8001 32 --threads 1 --path /short --deadline 20)"
echo "$short" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["errors"]==0 and sum(d["counts"].values())==32, d' \
  || fail "least-connections: short connections failed: $short"
sleep 2.5   # housekeeping recounts live connections from connection tracking (1 s)
open_hold; open_hold
h6="$(holds)"
[ "$h6" = "2 2 2" ] || fail "least-connections: after 32 short connections the 2 new held ones made '$h6', expected '2 2 2' (round-robin would give 3 2 1)"
ok "least-connections: held connections 2/1/1, then 32 short ones ($short), then 2 more held -> $h6"

# --- weighted 1:2:3, 3,000 connections
w="$(in_ns client python3 "$LB" "$VIP" 80 3000 --threads 24 --path /w --deadline 45)"
python3 - "$w" <<'PY' || fail "weighted: $w"
import json, sys
d = json.loads(sys.argv[1]); c = d["counts"]; n = sum(c.values())
assert d["errors"] <= 30, ("too many failed connections", d)
for i, wt in ((1, 1), (2, 2), (3, 3)):
    exp = n * wt / 6
    got = c.get("be%d" % i, 0)
    assert abs(got - exp) <= 0.05 * exp, ("be%d" % i, got, exp, d)
print("weighted ok", d)
PY
ok "weighted 1:2:3 over 3,000 connections: $w"

# --- source-hash: one client, one backend
sh1="$(in_ns client python3 "$LB" "$VIP" 8002 60 --threads 8 --path /sh --deadline 20)"
sh2="$(in_ns client2 python3 "$LB" "$VIP" 8002 60 --threads 8 --path /sh --deadline 20)"
for r in "$sh1" "$sh2"; do
  echo "$r" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["errors"]==0 and len(d["counts"])==1 and sum(d["counts"].values())==60, d' \
    || fail "source-hash: a client was spread over backends: client $sh1, client2 $sh2"
done
ok "source-hash: client -> $sh1, client2 -> $sh2"

# --- a drained backend gets no new flows
dr="$(in_ns client python3 "$LB" "$VIP" 8003 60 --threads 8 --path /dr --deadline 20)"
echo "$dr" | python3 -c '
import json,sys; d=json.load(sys.stdin); c=d["counts"]
assert d["errors"]==0 and "be3" not in c and c.get("be1")==30 and c.get("be2")==30, d' \
  || fail "drained: be3 (down = true) got flows or the others were not shared: $dr"
be3_dr="$(grep -c 'REQ .* /dr' "$S/logs/be3-http.log" || true)"
[ "$be3_dr" = 0 ] || fail "drained: be3's own log shows $be3_dr requests"
ok "drained be3: 0 of 60 connections (be3 log: 0), be1/be2 30 each: $dr"

# --- ctl nat: bindings of the held least-connections flows
python3 - "$(ctl nat --port 8001 --state established --json)" <<'PY' || fail "ctl nat: $(ctl nat --port 8001)"
import json, sys
d = json.loads(sys.argv[1])
b = d["bindings"]
assert d["matched"] >= 6 and len(b) == d["matched"], d
for x in b:
    assert x["kind"] == "dnat" and x["orig_src"] == "100.64.0.2" and x["orig_dst"] == "192.0.2.100" and x["orig_dport"] == 8001, x
    assert x["xlat_dst"] in ("192.0.2.11", "192.0.2.12", "192.0.2.13") and x["xlat_dport"] == 80 and x["ingress"] == "client", x
rr = [x for x in d["backends"] if x["rule"] == "lb-rr"]
assert len(rr) == 3 and all(x["up"] and x["healthy"] is True for x in rr), rr
assert [x["state"] for x in d["backends"] if x["rule"] == "lb-drained"] == ["up", "up", "down (config)"], d["backends"]
assert d["stats"]["dnat_bindings"] >= 3000, d["stats"]
print("ctl nat ok:", len(b), "bindings")
PY
ctl nat --port 8001 | grep -q "100.64.0.2:[0-9]* -> 192.0.2.100:8001  =>  100.64.0.2:[0-9]* -> 192.0.2.1[123]:80" || fail "ctl nat human output: $(ctl nat --port 8001)"
none="$(ctl nat --addr 198.51.100.99 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["matched"])')"
[ "$none" = 0 ] || fail "ctl nat --addr of an unrelated address matched $none"
ok "ctl nat lists the held flows' bindings 192.0.2.100:8001 -> backends (filters work), backends and counters"

# --- drain / undrain at run time
out="$(ctl nat drain 192.0.2.12:80 --rule lb-rr)" || fail "ctl nat drain: $out"
d1="$(in_ns client python3 "$LB" "$VIP" 8004 30 --threads 4 --path /rr --deadline 20)"
echo "$d1" | python3 -c 'import json,sys; d=json.load(sys.stdin); c=d["counts"]; assert d["errors"]==0 and "be2" not in c and c.get("be1")==15 and c.get("be3")==15, d' \
  || fail "after ctl nat drain be2 still got flows (or others failed): $d1"
out2="$(ctl nat undrain 192.0.2.12:80 --rule lb-rr)" || fail "ctl nat undrain: $out2"
d2="$(in_ns client python3 "$LB" "$VIP" 8004 30 --threads 4 --path /rr --deadline 20)"
echo "$d2" | python3 -c 'import json,sys; d=json.load(sys.stdin); c=d["counts"]; assert d["errors"]==0 and c.get("be2")==10, d' \
  || fail "after ctl nat undrain be2 did not get its share: $d2"
if bad="$(ctl nat drain 192.0.2.99:80 2>&1)"; then fail "draining an unknown backend succeeded: $bad"; fi
ok "ctl nat drain be2: $d1 ($out); undrain: $d2; unknown backend: $bad"

# --- health checks: stop be2's server, the gateway stops sending it new flows
kill -TERM "$("$LAB" pid --id "$ID" be2-http)" 2>/dev/null || fail "cannot stop be2's server"
end=$(( $(ms_now) + 8000 ))
until ctl nat --json | python3 -c '
import json,sys; d=json.load(sys.stdin)
sys.exit(0 if any(b["rule"]=="lb-rr" and b["address"]=="192.0.2.12:80" and b["healthy"] is False and not b["up"] for b in d["backends"]) else 1)'; do
  [ "$(ms_now)" -lt "$end" ] || fail "be2 not marked unhealthy 8 s after its server stopped: $(ctl nat | sed -n '/backends/,$p')"
  sleep 0.2
done
h="$(in_ns client python3 "$LB" "$VIP" 8004 30 --threads 4 --path /rr --deadline 20)"
echo "$h" | python3 -c 'import json,sys; d=json.load(sys.stdin); c=d["counts"]; assert d["errors"]==0 and "be2" not in c and sum(c.values())==30, d' \
  || fail "with be2 unhealthy: $h"
grep -q "backend down: health check fails" "$S/logs/gateway.log" || fail "no health-check log line"
ok "health check: be2 stopped -> marked unhealthy, 30 new flows to :8004 all on be1/be3 without errors: $h"

for n in client client2 gateway server be1 be2 be3; do
  rs="$(in_ns "$n" nft list ruleset 2>/dev/null || true)"
  [ -z "$rs" ] || fail "nftables ruleset in $n: $rs"
done
ok "no nftables ruleset in any of the 7 namespaces; checks took $(( ($(ms_now) - t_start) / 1000 )) s"
