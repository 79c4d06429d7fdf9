#!/usr/bin/env bash
# Netstack mode: the gateway's tunnel address answers DNS over UDP and TCP by
# forwarding to its resolver (a tiny responder on the server, 203.0.113.2:53);
# UDP echo to the server works both ways; a denied UDP port gets nothing; a
# closed one gets ICMP port unreachable relayed from the host.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netstack.sh"
need_gateway
ns_lab_up
tool_bg dns server dns-server "$SERVER" --seconds 60
tool_bg echo server udp-echo-server "$SERVER" 7 --seconds 60
wait_log "$S/dns.log" "ready" 10 || fail "DNS responder did not start: $(cat "$S/dns.log")"
wait_log "$S/echo.log" "ready" 10 || fail "UDP echo server did not start: $(cat "$S/echo.log")"
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
a="$(tool client dns-query udp "$GW_TUN_ADDR" www.example.test)" || fail "DNS over UDP to the gateway failed"
[ "$a" = 192.0.2.123 ] || fail "DNS over UDP: answer '$a'"
ok "DNS over UDP to $GW_TUN_ADDR answered ($a)"
a="$(tool client dns-query tcp "$GW_TUN_ADDR" www.example.test)" || fail "DNS over TCP to the gateway failed"
[ "$a" = 192.0.2.123 ] || fail "DNS over TCP: answer '$a'"
ok "DNS over TCP to $GW_TUN_ADDR answered ($a)"
grep -q "udp query from 203.0.113.1" "$S/dns.log" && grep -q "tcp query from 203.0.113.1" "$S/dns.log" \
  || fail "the resolver did not see both queries from the gateway: $(cat "$S/dns.log")"
ok "the resolver saw the queries from the gateway's host socket"
n="$(tool client udp-echo "$SERVER" 7)" || fail "UDP echo client failed"
[ "$n" = 5 ] || fail "UDP echo: $n of 5 datagrams came back intact"
ok "UDP echo: 5 of 5 datagrams came back intact"
# a UDP port the rules don't allow is not relayed
in_ns client timeout 5 "$PY" - <<'PYEOF' || fail "UDP to a denied port got an answer"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5)
s.sendto(b"x", ("203.0.113.2", 9))
try:
    s.recvfrom(100); sys.exit(1)
except (socket.timeout, ConnectionRefusedError):
    pass
PYEOF
ok "UDP to a port the rules deny gets nothing back"
# an allowed UDP port where nothing listens: the host's ICMP port unreachable
# comes back to the client as one (ECONNREFUSED on its connected socket)
in_ns client timeout 5 "$PY" - <<'PYEOF' || fail "UDP to a closed port: no port unreachable reached the client"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
s.connect(("203.0.113.2", 17))
for _ in range(3):
    s.send(b"x")
    try:
        s.recv(100)
    except ConnectionRefusedError:
        sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
PYEOF
ok "UDP to a closed port on the server: the client got ICMP port unreachable (ECONNREFUSED)"
