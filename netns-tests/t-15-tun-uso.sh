#!/usr/bin/env bash
# TUN UDP offload (USO): the server answers a client's request with a burst
# sent in one sendmsg with UDP_SEGMENT (1,200-byte segments), so the kernel
# forwards it to the gateway's TUN as one UDP super-packet (Linux >= 6.2
# with TUN_F_USO4/6 on). The gateway cuts it into datagrams before the
# pipeline: every burst arrives at the client whole, in order, as 1,200-byte
# datagrams, over IPv4 and IPv6, and the gateway counts the UDP
# super-packets it read (tun_rx_uso > 0). The other way, the client sends
# the same bursts: the gateway coalesces the decrypted datagrams into UDP
# super-packets on its TUN writes (tun_tx_uso > 0) and the server, whose
# kernel cuts them again, receives 10 intact 1,200-byte datagrams each time.
. "$(dirname "$0")/lib.sh"
need_portcullis
PORT=9100
BURSTS="${NETNS_USO_BURSTS:-20}"
export LAB_PORTCULLIS_EXTRA="
[[rule]]
chain = \"forward\"
name = \"uso\"
proto = \"udp\"
dport = $PORT
action = \"accept\"
"
lab_up
in_ns server timeout 120 python3 "$NT_DIR/usoburst.py" serve "$PORT" >/dev/null 2>&1 &
CAP_PIDS+=("$!")
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
for dst in "$SERVER" "$SERVER6"; do
  ans=""
  for _ in 1 2 3 4 5; do  # the server may still be starting
    ans="$(in_ns client timeout 10 python3 "$NT_DIR/usoburst.py" get "$dst" "$PORT" 12000 1200 || true)"
    [ "$ans" = "10 12000 1" ] && break
    sleep 0.5
  done
  [ "$ans" = "10 12000 1" ] || fail "$dst: first burst: got '$ans' (datagrams bytes ok), want '10 12000 1'"
  for i in $(seq 2 "$BURSTS"); do
    ans="$(in_ns client timeout 10 python3 "$NT_DIR/usoburst.py" get "$dst" "$PORT" 12000 1200 || true)"
    [ "$ans" = "10 12000 1" ] || fail "$dst: burst $i: got '$ans' (datagrams bytes ok), want '10 12000 1'"
  done
  ok "$dst: $BURSTS bursts of 12,000 bytes arrived as 10 datagrams of 1,200 bytes each, intact"
  for i in $(seq 1 "$BURSTS"); do
    ans="$(in_ns client timeout 10 python3 "$NT_DIR/usoburst.py" put "$dst" "$PORT" 12000 1200 || true)"
    [ "$ans" = "10 12000 1" ] || fail "$dst: client burst $i: the server got '$ans' (datagrams bytes ok), want '10 12000 1'"
  done
  ok "$dst: $BURSTS client bursts reached the server as 10 datagrams of 1,200 bytes each, intact"
done
uso="$(ctl stats --json | python3 -c 'import json,sys; io=json.load(sys.stdin)["io"]; print(io["tun_rx_uso"], io["tun_rx_segments"], io["tun_tx_uso"])')" \
  || fail "ctl stats --json lacks tun_rx_uso or tun_tx_uso"
read -r n segs txn <<< "$uso"
if [ "$n" = 0 ]; then
  kmaj="$(uname -r | cut -d. -f1)"; kmin="$(uname -r | cut -d. -f2)"
  if [ "$kmaj" -lt 6 ] || { [ "$kmaj" = 6 ] && [ "$kmin" -lt 2 ]; }; then
    skip "kernel $(uname -r) < 6.2 has no TUN USO: the bursts came segmented by the kernel (data checked above)"
  fi
  fail "no UDP super-packet read from the TUN (tun_rx_uso=0, tun_rx_segments=$segs); gateway log: $(grep -m1 'TUN offloads' "$S/logs/gateway.log")"
fi
ok "gateway: $n UDP super-packets read from the TUN and cut before the pipeline ($segs segments in all, TCP included)"
[ "$txn" -gt 0 ] || fail "no UDP super-packet written to the TUN (tun_tx_uso=0)"
ok "gateway: $txn UDP super-packets written to the TUN (decrypted datagrams coalesced)"
