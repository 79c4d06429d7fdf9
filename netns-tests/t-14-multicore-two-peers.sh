#!/usr/bin/env bash
# Decryption spread over cores by peer (`[interface] crypto_threads = 2`,
# wg::parallel): two stock wireguard-go clients ping the server through the
# gateway at once (8 echo requests in flight each, one every 2 ms, 1,200-byte
# payloads), then fetch a 16 MB file each at the same time. Every echo is
# answered, both files arrive intact, then both upload at once (iperf3, 3 s),
# and the gateway's counters show receive rounds decrypted and flushes
# encrypted on the crypto threads
# (udp_rx_parallel > 0, udp_tx_parallel > 0; with
# NETNS_MC_THREADS=1 that check fails: everything is inline).
. "$(dirname "$0")/lib.sh"
need_portcullis
N="${NETNS_MC_PINGS:-2000}"
THREADS="${NETNS_MC_THREADS:-2}"
LAB_PORTCULLIS_IFACE="crypto_threads = $THREADS" lab_up --client2
grep -q "^crypto_threads = $THREADS" "$S/gateway.toml" || fail "the lab did not write crypto_threads"
head -c $((16 * 1024 * 1024)) /dev/urandom > "$S/www/mc.bin"
want="$(sha256sum "$S/www/mc.bin" | awk '{print $1}')"
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
wait_ping client2 "$GW_TUN_ADDR" 10 || fail "client2 cannot ping the gateway"
grep -q "crypto_threads=$THREADS" "$S/logs/gateway.log" || fail "gateway did not start $THREADS crypto threads: $(grep -m1 crypto "$S/logs/gateway.log")"

# both clients at once: first the pings (every one must be answered), then
# the downloads (a ping stream beside two bulk downloads loses packets in the
# lab's queues with any gateway, inline decryption included)
for c in client client2; do
  in_ns "$c" ping -q -i 0.002 -l 8 -s 1200 -c "$N" -w 60 "$SERVER" > "$S/ping-$c.out" 2>&1 &
  echo $! > "$S/ping-$c.pid"
done
for c in client client2; do wait "$(cat "$S/ping-$c.pid")" || true; done
for c in client client2; do
  line="$(grep 'packets transmitted' "$S/ping-$c.out")" || fail "$c: no ping summary: $(cat "$S/ping-$c.out")"
  tx="$(echo "$line" | awk '{print $1}')"; rx="$(echo "$line" | awk '{print $4}')"
  [ "$tx" = "$N" ] && [ "$rx" = "$N" ] || fail "$c: $line (expected $N sent and $N answered)"
  ok "$c: $N/$N pings answered while the other client pinged too"
done
for c in client client2; do
  in_ns "$c" curl -sS --max-time 60 -o "$S/got-$c.bin" "http://$SERVER:80/mc.bin" 2> "$S/curl-$c.err" &
  echo $! > "$S/curl-$c.pid"
done
for c in client client2; do
  wait "$(cat "$S/curl-$c.pid")" || fail "$c: curl failed: $(cat "$S/curl-$c.err")"
done
for c in client client2; do
  got="$(sha256sum "$S/got-$c.bin" | awk '{print $1}')"
  [ "$got" = "$want" ] || fail "$c: 16 MB file differs (server $want, $c $got)"
  ok "$c: 16 MB fetched intact, at the same time as the other client"
done
# and the other way at the same time: both upload for 3 s (iperf3; the
# gateway decrypts full-size packets from two peers: the rounds worth spreading)
uploads_at_once 3
ctl stats --json > "$S/stats.json" || fail "ctl stats failed"
read -r rounds par rx trounds tpar tx < <(python3 -c 'import json,sys; io=json.load(open(sys.argv[1]))["io"]; print(io["udp_rx_parallel_rounds"], io["udp_rx_parallel"], io["udp_rx"], io["udp_tx_parallel_rounds"], io["udp_tx_parallel"], io["udp_tx"])' "$S/stats.json") \
  || fail "ctl stats --json lacks the parallel counters: $(head -c 400 "$S/stats.json")"
[ "$par" -gt 0 ] || fail "no receive round was decrypted on the crypto threads (udp_rx_parallel_rounds=$rounds, udp_rx=$rx)"
[ "$par" -le "$rx" ] || fail "more datagrams decrypted in parallel ($par) than received ($rx)"
ok "gateway: $rounds receive rounds decrypted by peer on $THREADS threads, $par of $rx datagrams"
[ "$tpar" -gt 0 ] || fail "no flush was encrypted on the crypto threads (udp_tx_parallel_rounds=$trounds, udp_tx=$tx)"
[ "$tpar" -le "$tx" ] || fail "more datagrams encrypted in parallel ($tpar) than sent ($tx)"
ok "gateway: $trounds flushes encrypted by peer on $THREADS threads, $tpar of $tx datagrams"
