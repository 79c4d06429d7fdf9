#!/usr/bin/env bash
# L7 firewall rule on DNS over UDP: a `dns_qname` drop rule makes a query for
# a blocked name go unanswered (the gateway drops it: timeout, and the server
# never sees it) while a query for another name is answered, also when both
# are asked from one socket (one UDP flow: every query is decided). The responder is
# netns-tests/dnsprobe.py in the server namespace.
. "$(dirname "$0")/lib.sh"
need_portcullis
export LAB_PORTCULLIS_EXTRA='
[[rule]]
chain = "forward"
name = "dns-blocked"
proto = "udp"
dport = 53
dns_qname = ["blocked.example.net", "*.blocked.example.net"]
action = "drop"
log = true

[[rule]]
chain = "forward"
name = "dns"
proto = "udp"
dport = 53
action = "accept"
'
lab_up
in_ns server timeout 120 python3 "$NT_DIR/dnsprobe.py" serve 53 >/dev/null 2>&1 &
CAP_PIDS+=("$!")
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
cap_start dns server eth0 "udp dst port 53"
ans=""
for _ in 1 2 3 4 5; do  # the responder may still be starting
  ans="$(in_ns client timeout 5 python3 "$NT_DIR/dnsprobe.py" query "$SERVER" ok.example.org 1 || true)"
  [ "$ans" = 192.0.2.53 ] && break
done
[ "$ans" = 192.0.2.53 ] || fail "query for ok.example.org not answered (got '$ans')"
ok "ok.example.org answered ($ans)"
r=0; out="$(in_ns client timeout 10 python3 "$NT_DIR/dnsprobe.py" query "$SERVER" WWW.Blocked.Example.NET. 3)" || r=$?
[ "$r" = 1 ] && [ "$out" = timeout ] || fail "query for www.blocked.example.net: expected a timeout, got exit $r '$out'"
out="$(in_ns client timeout 20 python3 "$NT_DIR/dnsprobe.py" query "$SERVER" ok.example.org,x.blocked.example.net,ok.example.org 3 | tr '\n' ' ' || true)"
[ "$out" = "192.0.2.53 timeout 192.0.2.53 " ] || fail "one socket asking ok, blocked, ok: expected answer, timeout, answer; got '$out'"
ok "one socket: ok.example.org answered, x.blocked.example.net dropped, ok.example.org answered again"
seen="$(cap_count dns)"
# every packet the server saw is an ok.example.org query
blocked_seen="$(tcpdump -nn -r "$S/cap-dns.pcap" 2>/dev/null | grep -ci blocked || true)"
[ "$seen" -ge 1 ] || fail "control: the server capture saw no DNS query"
[ "$blocked_seen" = 0 ] || fail "the blocked query reached the server: $(cap_show dns)"
grep -q "dns-blocked" "$S/logs/gateway.log" || fail "no log line for rule dns-blocked in the gateway log"
ok "www.blocked.example.net dropped (timeout after 3 s, 0 such queries at the server, logged by rule dns-blocked)"
