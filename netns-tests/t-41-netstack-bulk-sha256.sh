#!/usr/bin/env bash
# Netstack mode: a 200 MB download through smoltcp and a host socket has the
# same SHA-256 at both ends.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/netstack.sh"
need_gateway
MB="${NETNS_BULK_MB:-200}"
LAB_WWW_SIZE="$((MB + 64))m" ns_lab_up
head -c "$((MB * 1024 * 1024))" /dev/urandom > "$S/www/big.bin"
want="$(sha256sum "$S/www/big.bin" | awk '{print $1}')"
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
t0=$(ms_now)
got="$(in_ns client curl -sS --max-time 120 "http://$SERVER:80/big.bin" | sha256sum | awk '{print $1}')" || fail "curl of big.bin failed"
ms=$(( $(ms_now) - t0 ))
[ "$got" = "$want" ] || fail "SHA-256 differs: server $want, client $got"
ok "$MB MB through the netstack in ${ms} ms, SHA-256 $want at both ends; gateway RSS $(gw_rss_kb) kB"
