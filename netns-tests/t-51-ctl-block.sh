#!/usr/bin/env bash
# `ctl block` / `ctl unblock` by address and by peer cut and restore the
# client's traffic (ping and HTTP through the gateway); `ctl blocklist`
# shows the entries with origin ctl.
. "$(dirname "$0")/lib.sh"
need_portcullis
lab_up
wait_ping client "$SERVER" 10 || fail "client cannot ping the server"
check_allowed_http client 80

for target in 100.64.0.2 peer:client; do
  out="$(ctl block "$target" --ttl 10m --reason "netns test")" || fail "ctl block $target: $out"
  echo "$out" | grep -q "^blocked $target for 600s" || fail "ctl block output: $out"
  ctl blocklist | grep -q "^$target .* ctl " || fail "ctl blocklist lacks $target: $(ctl blocklist)"
  in_ns client ping -c1 -W1 "$SERVER" >/dev/null 2>&1 && fail "ping works while $target is blocked"
  read -r rc _ _ <<<"$(curl_probe client "http://$SERVER/" 3)"
  [ "$rc" != 0 ] || fail "HTTP works while $target is blocked"
  ok "blocked $target: ping and HTTP fail"
  out="$(ctl unblock "$target")" || fail "ctl unblock $target: $out"
  wait_ping client "$SERVER" 5 || fail "ping still fails after unblocking $target"
  read -r rc _ code <<<"$(curl_probe client "http://$SERVER/" 5)"
  [ "$rc" = 0 ] && [ "$code" = 200 ] || fail "HTTP after unblocking $target: rc $rc code $code"
  ok "unblocked $target: ping and HTTP work"
done
hits="$(ctl stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["drop_reasons"].get("blocked",0))')"
[ "$hits" -gt 0 ] || fail "no drops counted under reason blocked"
ok "drops counted under reason blocked: $hits"
