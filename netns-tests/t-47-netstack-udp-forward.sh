#!/usr/bin/env bash
# Netstack mode, UDP both ways through the firewall, gateway as nobody with no
# capabilities:
# - a UDP port forward 203.0.113.1:9007 (host side) -> 100.64.0.2:8007 (a
#   UDP echo service on the client): two host clients at once each get their
#   own echoes back; the service sees the gateway's tunnel address; the
#   datagrams pass chain output (a port the rules don't allow gets nothing);
#   a datagram over the tunnel MTU goes as IP fragments and echoes back whole;
# - a peer reaches a UDP service on the host itself (netstack.host_services,
#   added by a hot reload: a live key) through chain input.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netstack.sh"
need_gateway
export LAB_PORTCULLIS_EXTRA='
# t-47: the UDP forward (output chain) and the host UDP service (input chain)
[[rule]]
chain = "output"
to = "client"
proto = "udp"
dport = 8007
action = "accept"

[[rule]]
chain = "output"
to = "client"
proto = "udp"
dport = 8008
action = "drop"

[[rule]]
chain = "input"
proto = "udp"
dport = 5007
action = "accept"

[[netstack.forward]]
proto = "udp"
listen = "203.0.113.1:9007"
to = "100.64.0.2:8007"
max_flows = 8
idle_timeout = "30s"

# a forward whose target port chain output drops
[[netstack.forward]]
proto = "udp"
listen = "203.0.113.1:9008"
to = "100.64.0.2:8008"
'
ns_lab_up
check_unprivileged
# UDP echo services on the client (tunnel address), logging who sent
for port in 8007 8008; do
  in_ns client timeout 60 "$PY" -u - "$CLIENT_ADDR" "$port" > "$S/cecho-$port.log" 2>&1 <<'PYEOF' &
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(0.5)
print("ready", flush=True)
end = time.time() + 55
while time.time() < end:
    try:
        d, peer = s.recvfrom(65535)
    except socket.timeout:
        continue
    print("from %s:%d" % peer, flush=True)
    s.sendto(d, peer)
PYEOF
  CAP_PIDS+=("$!")
  wait_log "$S/cecho-$port.log" ready 10 || fail "client UDP echo on $port did not start"
done
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway (handshake)"
# two host clients at once, each checks its own echoes
in_ns server timeout 20 "$PY" - <<'PYEOF' || fail "UDP through the port forward failed"
import os, socket, sys
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.settimeout(2)
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.settimeout(2)
good = 0
for i in range(5):
    ma, mb = b"A" + os.urandom(50 + i * 100), b"B" + os.urandom(60 + i * 100)
    a.sendto(ma, ("203.0.113.1", 9007)); b.sendto(mb, ("203.0.113.1", 9007))
    for s, m in ((b, mb), (a, ma)):
        try:
            d, src = s.recvfrom(65535)
            good += (d == m and src == ("203.0.113.1", 9007))
        except socket.timeout:
            pass
print(good)
sys.exit(0 if good == 10 else 1)
PYEOF
ok "host port 9007 -> client 100.64.0.2:8007: 10 of 10 echoes, each back to its own host client"
grep -q "^from $GW_TUN_ADDR:" "$S/cecho-8007.log" || fail "the client service did not see the gateway's tunnel address: $(head -3 "$S/cecho-8007.log")"
[ "$(grep -c '^from ' "$S/cecho-8007.log")" = 10 ] || fail "the client service saw $(grep -c '^from ' "$S/cecho-8007.log") datagrams, expected 10"
[ "$(grep '^from ' "$S/cecho-8007.log" | sort -u | wc -l)" = 2 ] || fail "expected two tunnel-side ports (one per host client): $(sort -u "$S/cecho-8007.log")"
ok "the client saw the gateway's tunnel address, one port per host client"
# a datagram larger than the tunnel MTU: it leaves the netstack as IP
# fragments, the client reassembles it, and its echo (fragmented by the
# client's kernel) comes back whole
in_ns server timeout 15 "$PY" - <<'PYEOF' || fail "a 4000-byte datagram through the UDP forward did not come back whole"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
m = b"F" + os.urandom(3999)
for _ in range(3):
    s.sendto(m, ("203.0.113.1", 9007))
    try:
        d, _ = s.recvfrom(65535)
    except socket.timeout:
        continue
    sys.exit(0 if d == m else 1)
sys.exit(1)
PYEOF
ok "a 4000-byte datagram through the forward (IP fragments into the tunnel) echoed back whole"
in_ns server timeout 10 "$PY" - <<'PYEOF' || fail "the forward to a port chain output drops answered"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
s.sendto(b"x", ("203.0.113.1", 9008))
try:
    s.recvfrom(100); sys.exit(1)
except socket.timeout:
    pass
PYEOF
grep -q '^from ' "$S/cecho-8008.log" && fail "a datagram the output chain denies reached the client"
ok "forward 9008 -> 8008 (denied by chain output): nothing reached the client"

# a UDP service on the host (the gateway namespace's loopback), published by
# a reload that adds host_services
in_ns gateway timeout 60 "$PY" "$NS_TOOL" udp-echo-server 127.0.0.1 5007 --seconds 55 > "$S/hostecho.log" 2>&1 &
CAP_PIDS+=("$!")
wait_log "$S/hostecho.log" ready 10 || fail "host UDP echo did not start"
n="$(tool client udp-echo "$GW_TUN_ADDR" 5007)" || fail "UDP echo client failed"
[ "$n" = 0 ] || fail "the host service answered before host_services named it ($n)"
sed -i 's|^dns_upstream = |host_services = ["udp/5007"]\ndns_upstream = |' "$S/gateway.toml"
grep -q 'host_services = \["udp/5007"\]' "$S/gateway.toml" || fail "could not edit the config"
cfg_perms
before="$(grep -c 'configuration reloaded' "$S/logs/gateway.log" || true)"
kill -HUP "$GW_PID"
end=$(( $(ms_now) + 10000 ))
until [ "$(grep -c 'configuration reloaded' "$S/logs/gateway.log" || true)" -gt "$before" ]; do
  [ "$(ms_now)" -lt "$end" ] || fail "no reload: $(tail -n 5 "$S/logs/gateway.log")"
  sleep 0.05
done
grep -q "changed setting not applied until a restart" "$S/logs/gateway.log" && fail "host_services is a live key, yet a restart was asked for: $(grep 'until a restart' "$S/logs/gateway.log")"
n="$(tool client udp-echo "$GW_TUN_ADDR" 5007)" || fail "UDP echo client failed"
[ "$n" = 5 ] || fail "UDP echo to the host service $GW_TUN_ADDR:5007: $n of 5"
ok "peer -> host UDP service $GW_TUN_ADDR:5007 (host_services added by a reload): 5 of 5 echoes"
check_unprivileged
