#!/usr/bin/env bash
# portcullis at both ends: the client namespace runs `portcullis run` as its
# WireGuard client (lab --client-kind portcullis) and reaches the server
# through the portcullis gateway with its whole firewall on (rules, conntrack,
# road-warrior NAT): ping (v4 and v6), HTTP, and a bounded iperf3 -t 3. The
# client's own ruleset (input: replies only) refuses a connection the gateway
# forwards to it (the gateway's port forward 100.64.0.200:8080 -> client:80).
. "$(dirname "$0")/lib.sh"
need_gateway
[ -x "$PORTCULLIS_BIN" ] || fail "no portcullis binary at $PORTCULLIS_BIN (the client needs it)"
lab_up --client-kind portcullis --nat
cctl() { "$PORTCULLIS_BIN" ctl --socket "$S/client-control.sock" "$@"; }

# the client really is portcullis: no wireguard-go in its namespace, its own
# control socket answers
pids="$(ip netns pids "pl${ID}-client" | xargs -r ps -o comm= -p | sort -u | tr '\n' ' ')"
[[ " $pids " != *" wireguard-go "* ]] || fail "a wireguard-go process runs in the client namespace: $pids"
[[ " $pids " == *" portcullis "* ]] || fail "no portcullis process in the client namespace: $pids"

wait_ping client "$SERVER" 15 || fail "the portcullis client cannot ping the server $SERVER through the gateway"
in_ns client ping -c3 -i0.2 -W1 "$SERVER" >/dev/null || fail "ping to $SERVER lost packets after the handshake"
in_ns client ping -6 -c3 -i0.2 -W1 "$SERVER6" >/dev/null || fail "IPv6 ping to $SERVER6 failed"
peers="$(cctl --json peers)" || fail "the client's control socket does not answer"
python3 -c '
import json, sys
p = json.loads(sys.argv[1])
assert len(p) == 1 and p[0]["name"] == "gateway" and p[0]["session"] and p[0]["rx_bytes"] > 0, p
' "$peers" || fail "the client reports no session with the gateway: $peers"
ok "portcullis client: session with the gateway, pings $SERVER and $SERVER6"

check_allowed_http client 80

# the gateway masquerades (full firewall on): the server sees 100.64.0.254
json="$(timeout 30 ip netns exec "pl${ID}-client" iperf3 -c "$SERVER" -p 5201 -t 3 -J 2>&1)" || fail "iperf3 failed: $(printf '%s' "$json" | tail -c 300)"
read -r bytes remote < <(printf '%s' "$json" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(int(d["end"]["sum_received"]["bytes"]), d["start"]["connected"][0]["local_host"])')
[ "$bytes" -gt 1000000 ] || fail "iperf3 moved only $bytes bytes in 3 s"
gw_nat="$(ctl --json nat)" || fail "gateway ctl nat failed"
printf '%s' "$gw_nat" | grep -q '100.64.0.254' || fail "the gateway has no masquerade binding to 100.64.0.254: $(printf '%s' "$gw_nat" | head -c 400)"
ok "iperf3 -t 3: $((bytes / 1000000)) MB received by the server (client side $remote; masqueraded by the gateway)"

# the client's input chain: a connection forwarded to it is dropped there
ip netns exec "pl${ID}-client" timeout 30 python3 -m http.server --bind 100.64.0.2 80 >/dev/null 2>&1 &
spawn_pid=$!
CAP_PIDS+=("$spawn_pid")
wait_for_listen() { in_ns client ss -Hltn "sport = :80" | grep -q LISTEN; }
for _ in $(seq 50); do wait_for_listen && break; sleep 0.1; done
wait_for_listen || fail "the client's test listener on :80 did not start"
before="$(cctl --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["dropped"][0])')"
r="$(curl_probe server "http://100.64.0.200:8080/" 2)"; rc="${r%% *}"
after="$(cctl --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["dropped"][0])')"
[ "$rc" = 28 ] || fail "a connection forwarded to the client was not dropped by its input chain: curl exit $rc ($r)"
[ "$after" -gt "$before" ] || fail "the client counted no drop ($before -> $after) for the forwarded connection"
ok "the client's input chain drops a connection forwarded to it (curl exit 28, client drops $before -> $after)"
