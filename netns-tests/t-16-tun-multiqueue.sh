#!/usr/bin/env bash
# Multi-queue TUN with a writer thread per queue (`[interface] tun_queues = 2`,
# io::tun_writer), with masquerade on (the queues are chosen from the
# translated packets): the gateway's TUN is a 2-queue device and two
# tun-writer threads run; 12 downloads of a 4 MB file at once all arrive
# intact (the loop reads both queues); 16 uploads at once (iperf3 -P 16)
# are written through both queues; and one upload alone shows the kernel
# handing the flow's replies back on the queue that wrote the flow (one flow,
# one queue, both ways). With NETNS_MQ_QUEUES=1 the queue checks fail, as
# they should.
. "$(dirname "$0")/lib.sh"
need_portcullis
Q="${NETNS_MQ_QUEUES:-2}"
LAB_PORTCULLIS_IFACE="tun_queues = $Q" lab_up --nat
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
in_ns gateway ip -d link show "$GW_TUN" > "$S/tun-link.txt"
grep -q "multi_queue numqueues 2 " "$S/tun-link.txt" || fail "$GW_TUN is not a 2-queue device: $(grep -m1 'tun type' "$S/tun-link.txt")"
ok "$GW_TUN: $(grep -o 'tun type.*numqueues [0-9]*' "$S/tun-link.txt")"
grep -q "tun_writer_threads=2" "$S/logs/gateway.log" || fail "gateway did not start 2 TUN writers: $(grep -m1 'batched IO' "$S/logs/gateway.log")"
writers="$(cat /proc/"$GW_PID"/task/*/comm | grep -c '^tun-writer-')" || true
[ "$writers" = 2 ] || fail "expected 2 tun-writer threads, found ${writers:-0}"
ok "2 tun-writer threads running"

head -c $((4 * 1024 * 1024)) /dev/urandom > "$S/www/mq.bin"
want="$(sha256sum "$S/www/mq.bin" | awk '{print $1}')"
for i in $(seq 12); do
  in_ns client curl -sS --max-time 60 -o "$S/got-$i.bin" "http://$SERVER:80/mq.bin" 2> "$S/curl-$i.err" &
  echo $! > "$S/curl-$i.pid"
done
for i in $(seq 12); do
  wait "$(cat "$S/curl-$i.pid")" || fail "download $i failed: $(cat "$S/curl-$i.err")"
  got="$(sha256sum "$S/got-$i.bin" | awk '{print $1}')"
  [ "$got" = "$want" ] || fail "download $i differs (server $want, client $got)"
done
ok "12 downloads of 4 MB at once, all intact"
read -r rx0 rx1 < <(ctl_io tun_rx_q0 tun_rx_q1) || fail "ctl stats failed"
[ "$rx0" -gt 100 ] && [ "$rx1" -gt 100 ] || fail "the loop did not read both queues (tun_rx_q0=$rx0, tun_rx_q1=$rx1)"
ok "packets read from queue 0: $rx0, queue 1: $rx1"

in_ns client timeout 30 iperf3 -c "$SERVER" -p 5201 -t 3 -P 16 -J > "$S/up16.json" 2>&1 || fail "iperf3 -P 16 failed: $(tail -c 400 "$S/up16.json")"
up="$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bytes"]))' "$S/up16.json")" \
  || fail "no iperf3 result: $(tail -c 400 "$S/up16.json")"
[ "$up" -gt 1000000 ] || fail "16 uploads moved only $up bytes in 3 s"
read -r tx0 tx1 tx errs < <(ctl_io tun_tx_q0 tun_tx_q1 tun_tx send_errors)
[ "$tx0" -gt 1000 ] && [ "$tx1" -gt 1000 ] || fail "writes did not spread over both queues (tun_tx_q0=$tx0, tun_tx_q1=$tx1)"
[ $((tx0 + tx1)) -ge "$tx" ] || fail "more packets written ($tx) than queued ($tx0 + $tx1)"
[ "$errs" = 0 ] || fail "send_errors=$errs"
ok "16 uploads at once: $up bytes; packets queued for writing on queue 0: $tx0, queue 1: $tx1"

# one flow alone: its packets are written to one queue, and the kernel hands
# its replies (the server's ACKs) back on that same queue
read -r a0 a1 b0 b1 < <(ctl_io tun_tx_q0 tun_tx_q1 tun_rx_q0 tun_rx_q1)
in_ns client timeout 30 iperf3 -c "$SERVER" -p 5201 -t 2 -J > "$S/up1.json" 2>&1 || fail "iperf3 failed: $(tail -c 400 "$S/up1.json")"
read -r c0 c1 d0 d1 < <(ctl_io tun_tx_q0 tun_tx_q1 tun_rx_q0 tun_rx_q1)
w0=$((c0 - a0)); w1=$((c1 - a1)); r0=$((d0 - b0)); r1=$((d1 - b1))
if [ "$w0" -gt "$w1" ]; then wq=0; wmain=$w0; wall=$((w0 + w1)); rmain=$r0; else wq=1; wmain=$w1; wall=$((w0 + w1)); rmain=$r1; fi
rall=$((r0 + r1))
[ "$wall" -gt 1000 ] || fail "one upload wrote only $wall packets"
# the data flow dominates; the iperf3 control connection adds a few packets
[ $((wmain * 100)) -ge $((wall * 95)) ] || fail "one flow's writes were spread: queue 0 $w0, queue 1 $w1"
[ $((rmain * 100)) -ge $((rall * 90)) ] || fail "the flow's replies did not come back on its queue $wq: read on queue 0 $r0, queue 1 $r1"
ok "one upload: written $wmain of $wall packets on queue $wq, replies read $rmain of $rall on the same queue"
