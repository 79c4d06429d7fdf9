# shellcheck shell=bash disable=SC2034
# netns-tests/lib.sh: helpers sourced by every netns-tests/t-*.sh.
#
# A test: `. "$(dirname "$0")/lib.sh"`, then `lab_up [lab up args]`, then checks
# with `ok`/`fail`; it exits 0 (pass), 77 (skip) or anything else (fail).
# The lab it brought up is torn down on exit whatever happens (trap), and the
# runner tears it down again by id if the test was killed.
#
# Environment:
#   NETNS_GATEWAY   gateway kind the portcullis tests run against (default
#                   portcullis; `wireguard-go` validates the tests themselves
#                   against a stock gateway)
#   PORTCULLIS_BIN  the binary (default target/release/portcullis)
#   NETNS_SKIP_MISSING_GATEWAY=1  skip (exit 77) instead of failing when the
#                   portcullis binary is missing
#   NETNS_IDS_FILE  (set by the runner) where lab ids are recorded
set -euo pipefail

NT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$NT_DIR/.." && pwd)"
LAB="$REPO_DIR/scripts/lab"
export PORTCULLIS_BIN="${PORTCULLIS_BIN:-$REPO_DIR/target/release/portcullis}"
GATEWAY_KIND="${NETNS_GATEWAY:-portcullis}"
TEST_NAME="$(basename "$0" .sh)"
ID=""
CAP_PIDS=()

SERVER=203.0.113.2
SERVER6=2001:db8:203::2
GW_TUN_ADDR=100.64.0.1
GW_TUN_ADDR6=2001:db8:64::1
CLIENT_ADDR=100.64.0.2
CLIENT2_ADDR=100.64.0.3
LAN_HOST=198.51.100.130
SERVER_VIA_UPSTREAM=203.0.113.66
UPSTREAM_SERVER_SIDE=203.0.113.65
# the gateway's tunnel address towards the upstream (LAN traffic is masqueraded to it)
GATEWAY_UPSTREAM_ADDR=100.64.1.2

say() { echo "[$TEST_NAME] $*"; }
fail() { echo "[$TEST_NAME] FAIL: $*" >&2; exit 1; }
skip() { echo "[$TEST_NAME] SKIP: $*"; exit 77; }
ok() { echo "[$TEST_NAME] ok: $*"; }

ms_now() { echo $(( $(date +%s%N) / 1000000 )); }

nt_cleanup() {
  local rc=$?
  local p
  for p in "${CAP_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  if [ -n "$ID" ]; then
    if [ "$rc" != 0 ] && [ "$rc" != 77 ] && [ -f "/run/portcullis-lab/$ID/logs/gateway.log" ]; then
      echo "--- gateway log (last 30 lines) ---" >&2
      tail -n 30 "/run/portcullis-lab/$ID/logs/gateway.log" >&2 || true
      # keep every log of the failed lab (the lab's state dir goes with it)
      if [ -n "${NETNS_LOG_DIR:-}" ] && [ -d "$NETNS_LOG_DIR" ]; then
        cp -r "/run/portcullis-lab/$ID/logs" "$NETNS_LOG_DIR/$TEST_NAME-$ID-logs" 2>/dev/null || true
        echo "--- all lab logs kept in $NETNS_LOG_DIR/$TEST_NAME-$ID-logs ---" >&2
      fi
    fi
    "$LAB" down --id "$ID" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap nt_cleanup EXIT
trap 'exit 143' TERM INT

need_gateway() { # fail fast (or skip) when the portcullis binary is missing
  if [ "$GATEWAY_KIND" = portcullis ] && [ ! -x "$PORTCULLIS_BIN" ]; then
    if [ "${NETNS_SKIP_MISSING_GATEWAY:-0}" = 1 ]; then skip "no portcullis binary at $PORTCULLIS_BIN"; fi
    fail "no portcullis binary at $PORTCULLIS_BIN (cargo build --release)"
  fi
}

lab_up() { # lab up args (the gateway kind comes from NETNS_GATEWAY unless given)
  [ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
  local args=("$@")
  if [[ " ${args[*]:-} " != *" --gateway "* ]]; then args+=(--gateway "$GATEWAY_KIND"); fi
  ID="$(printf 't%05x' $(( (RANDOM << 15 | RANDOM) & 0xfffff )))"
  [ -z "${NETNS_IDS_FILE:-}" ] || echo "$ID" >> "$NETNS_IDS_FILE"
  if ! timeout -k 5 60 "$LAB" up --id "$ID" "${args[@]}" >/dev/null; then
    fail "lab up ${args[*]} failed"
  fi
  S="/run/portcullis-lab/$ID"
  # shellcheck disable=SC1091
  . "$S/env"
}

in_ns() { local n="$1"; shift; ip netns exec "pl${ID}-$n" "$@"; }

# portcullis ctl against the lab gateway's control socket
ctl() { "$PORTCULLIS_BIN" ctl --socket "$S/control.sock" "$@"; }

# Prints the gateway's io counters named in $@ (ctl stats --json; -1 for
# one it does not have).
ctl_io() {
  ctl stats --json | python3 -c 'import json,sys; io=json.load(sys.stdin)["io"]; print(*[io.get(k, -1) for k in sys.argv[1:]])' "$@"
}

# Both clients (lab --client2) upload at once with iperf3 for SECONDS, each
# to its own server port (5201, 5202); each must move more than 1 MB.
uploads_at_once() { # SECONDS
  local t="$1" c port up
  for c in client client2; do
    port=5201; [ "$c" = client2 ] && port=5202
    in_ns "$c" timeout 30 iperf3 -c "$SERVER" -p "$port" -t "$t" -J > "$S/up-$c.json" 2>&1 &
    echo $! > "$S/up-$c.pid"
  done
  for c in client client2; do
    wait "$(cat "$S/up-$c.pid")" || fail "$c: iperf3 upload failed: $(tail -c 400 "$S/up-$c.json")"
    up="$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bytes"]))' "$S/up-$c.json")" \
      || fail "$c: no iperf3 result: $(tail -c 400 "$S/up-$c.json")"
    [ "$up" -gt 1000000 ] || fail "$c: uploaded only $up bytes in $t s"
    ok "$c: uploaded $up bytes in $t s while the other client uploaded too"
  done
}

# After editing $S/gateway.toml: keep it readable by the gateway (nobody).
cfg_perms() { chgrp "$(id -gn nobody)" "$S/gateway.toml"; chmod 0640 "$S/gateway.toml"; }

# Operations tests need the portcullis gateway itself.
need_portcullis() {
  [ "$GATEWAY_KIND" = portcullis ] || skip "operations test: needs the portcullis gateway (NETNS_GATEWAY=$GATEWAY_KIND)"
  need_gateway
}

# Wait until NODE can ping ADDR (the first packets pay for the handshake).
wait_ping() { # NODE ADDR [seconds]
  local n="$1" a="$2" t="${3:-10}" end
  end=$(( $(ms_now) + t * 1000 ))
  while [ "$(ms_now)" -lt "$end" ]; do
    in_ns "$n" ping -c1 -W1 "$a" >/dev/null 2>&1 && return 0
  done
  return 1
}

# curl from NODE; prints "exit_code elapsed_ms http_code"; body to $S/last_body
curl_probe() { # NODE URL MAX_SECONDS [curl args...]
  local n="$1" url="$2" max="$3"; shift 3
  local t0 t1 rc=0 code
  t0=$(ms_now)
  code="$(in_ns "$n" curl -sS -o "$S/last_body" -w '%{http_code}' --max-time "$max" "$@" "$url" 2>"$S/last_curl_err")" || rc=$?
  t1=$(ms_now)
  echo "$rc $((t1 - t0)) ${code:-000}"
}

# Packet capture with tcpdump inside a node, bounded in time.
# cap_start NAME NODE IFACE FILTER ; ... ; cap_count NAME -> number of packets
# CAP_DIRECTION=in|out restricts to one direction (tcpdump -Q).
cap_start() {
  local name="$1" n="$2" ifc="$3" filter="$4"
  ip netns exec "pl${ID}-$n" timeout -s INT 120 tcpdump -i "$ifc" ${CAP_DIRECTION:+-Q "$CAP_DIRECTION"} --immediate-mode -nn -U -w "$S/cap-$name.pcap" "$filter" \
    > "$S/cap-$name.log" 2>&1 &
  local pid=$!
  CAP_PIDS+=("$pid")
  echo "$pid" > "$S/cap-$name.pid"
  local end=$(( $(ms_now) + 5000 ))
  until grep -q "listening on" "$S/cap-$name.log" 2>/dev/null; do
    [ "$(ms_now)" -lt "$end" ] || fail "tcpdump $name on $n/$ifc did not start: $(cat "$S/cap-$name.log")"
    kill -0 "$pid" 2>/dev/null || fail "tcpdump $name on $n/$ifc exited: $(cat "$S/cap-$name.log")"
    sleep 0.05
  done
}
cap_stop() {
  local pid
  pid="$(cat "$S/cap-$1.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    sleep 0.3   # let the last packets in flight land
    kill -INT "$pid" 2>/dev/null || true
  fi
  # (often called in $(...), where `wait` cannot see the process: poll)
  local end=$(( $(ms_now) + 5000 ))
  while kill -0 "$pid" 2>/dev/null && [ "$(ms_now)" -lt "$end" ]; do sleep 0.05; done
  wait "$pid" 2>/dev/null || true
}
cap_count() { # NAME [read filter]: stops the capture (once), counts packets
  local name="$1"; shift
  cap_stop "$name"
  tcpdump -nn -r "$S/cap-$name.pcap" "$@" 2>/dev/null | wc -l
}
cap_show() { tcpdump -nn -r "$S/cap-$1.pcap" 2>/dev/null | head -n "${2:-5}"; }

# ---------------------------------------------------------------- shared checks
# (used by the portcullis tests and by t-00, which runs them on a stock gateway)

check_handshake_ping() {
  wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway's tunnel address $GW_TUN_ADDR within 10 s"
  local hs
  hs="$(in_ns client wg show "$CLIENT_IF" latest-handshakes | awk '{print $2}')"
  [ -n "$hs" ] && [ "$hs" != 0 ] || fail "no WireGuard handshake recorded by the client (wg show: '$hs')"
  in_ns client ping -c3 -i0.2 -W1 "$GW_TUN_ADDR" >/dev/null || fail "ping to the gateway lost packets after the handshake"
  ok "stock wireguard-go client handshakes ($(( $(date +%s) - hs )) s ago) and pings the gateway $GW_TUN_ADDR"
}

check_allowed_http() { # [node] [port]
  local n="${1:-client}" port="${2:-80}" r rc
  wait_ping "$n" "$GW_TUN_ADDR" 10 || fail "$n cannot ping the gateway"
  r="$(curl_probe "$n" "http://$SERVER:$port/" 5)"; rc="${r%% *}"
  [ "$rc" = 0 ] || fail "$n: curl to allowed $SERVER:$port failed: exit $rc ($(cat "$S/last_curl_err"))"
  grep -q "portcullis lab $ID: hello" "$S/last_body" || fail "$n: unexpected body from $SERVER:$port: $(head -c 200 "$S/last_body")"
  ok "$n: curl http://$SERVER:$port/ works (exit 0, body matches) [$r]"
}

check_reject_rst() { # port 81 is rejected by the gateway: refused (exit 7) in < 1 s, no SYN reaches the server
  wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
  cap_start rej server eth0 "tcp dst port 81 or tcp dst port 80"
  curl_probe client "http://$SERVER:80/" 5 >/dev/null   # control: the capture does see traffic
  local r rc ms
  r="$(curl_probe client "http://$SERVER:81/" 3)"; rc="${r%% *}"; ms="$(echo "$r" | awk '{print $2}')"
  local seen ctl; seen="$(cap_count rej tcp dst port 81)"; ctl="$(cap_count rej tcp dst port 80)"
  [ "$ctl" -gt 0 ] || fail "control: the server capture saw no packets of the allowed curl to port 80"
  [ "$rc" = 7 ] || fail "rejected port 81: expected curl exit 7 (connection refused), got $rc after ${ms} ms ($(cat "$S/last_curl_err"))"
  [ "$ms" -lt 1000 ] || fail "rejected port 81: refused only after ${ms} ms (expected < 1000 ms)"
  [ "$seen" = 0 ] || fail "rejected port 81: $seen packets to port 81 reached the server (the RST must come from the gateway): $(cap_show rej)"
  ok "port 81 refused with an RST in ${ms} ms (curl exit 7), 0 packets reached the server"
}

check_drop_timeout() { # port 82 is dropped: curl --max-time 2 times out (exit 28), no SYN reaches the server
  wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
  cap_start drop server eth0 "tcp dst port 82 or tcp dst port 80"
  curl_probe client "http://$SERVER:80/" 5 >/dev/null   # control: the capture does see traffic
  local r rc ms
  r="$(curl_probe client "http://$SERVER:82/" 2)"; rc="${r%% *}"; ms="$(echo "$r" | awk '{print $2}')"
  local seen ctl; seen="$(cap_count drop tcp dst port 82)"; ctl="$(cap_count drop tcp dst port 80)"
  [ "$ctl" -gt 0 ] || fail "control: the server capture saw no packets of the allowed curl to port 80"
  [ "$rc" = 28 ] || fail "dropped port 82: expected curl exit 28 (timeout), got $rc after ${ms} ms ($(cat "$S/last_curl_err"))"
  [ "$ms" -ge 1900 ] || fail "dropped port 82: curl ended after only ${ms} ms"
  [ "$seen" = 0 ] || fail "dropped port 82: $seen packets to port 82 reached the server: $(cap_show drop)"
  ok "port 82 dropped: curl timed out after ${ms} ms (exit 28), 0 packets reached the server"
}

check_ipv6() {
  wait_ping client "$GW_TUN_ADDR6" 10 || fail "client cannot ping the gateway over IPv6 ($GW_TUN_ADDR6)"
  in_ns client ping -6 -c3 -i0.2 -W1 "$SERVER6" >/dev/null || fail "IPv6 ping to the server $SERVER6 failed"
  local r rc
  r="$(curl_probe client "http://[$SERVER6]:80/" 5)"; rc="${r%% *}"
  [ "$rc" = 0 ] || fail "IPv6 curl to [$SERVER6]:80 failed: exit $rc ($(cat "$S/last_curl_err"))"
  grep -q "portcullis lab $ID: hello" "$S/last_body" || fail "IPv6: unexpected body"
  r="$(curl_probe client "http://[$SERVER6]:81/" 3)"; rc="${r%% *}"
  [ "$rc" = 7 ] || fail "IPv6 rejected port 81: expected curl exit 7, got $rc"
  ok "IPv6 through the tunnel: ping $GW_TUN_ADDR6 and $SERVER6, curl [$SERVER6]:80 works, :81 refused"
}
