# shellcheck shell=bash
# netns-tests/netstack.sh: helpers for the t-4x-netstack-* tests (sourced
# after lib.sh). The gateway is `scripts/lab up --gateway portcullis-netstack`:
# no TUN, started as nobody:nogroup with no capabilities.
NS_TOOL="$NT_DIR/netstack_tool.py"
PY="$(command -v python3)"

ns_lab_up() { GATEWAY_KIND=portcullis-netstack lab_up --gateway portcullis-netstack "$@"; }

gw_rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$GW_PID/status"; }

# The gateway process has no privilege at all: uid/gid nobody in all slots,
# every capability set empty.
check_unprivileged() {
  local st="/proc/$GW_PID/status"
  [ -r "$st" ] || fail "gateway process $GW_PID is gone"
  local nobody; nobody="$(id -u nobody)"
  awk -v u="$nobody" '/^Uid:/ { if ($2!=u || $3!=u || $4!=u || $5!=u) exit 1 }' "$st" \
    || fail "gateway uid is not nobody: $(grep ^Uid: "$st")"
  local c
  for c in CapInh CapPrm CapEff CapBnd CapAmb; do
    grep -q "^$c:[[:space:]]*0000000000000000$" "$st" || fail "gateway $c is not empty: $(grep "^$c:" "$st")"
  done
  ok "gateway pid $GW_PID runs as uid $nobody with no capabilities (Inh/Prm/Eff/Bnd/Amb all 0)"
}

# Run the tool in a node, bounded.
tool() { local n="$1"; shift; in_ns "$n" timeout 60 "$PY" "$NS_TOOL" "$@"; }

# Start a bounded background tool in a node; its output goes to $S/NAME.log.
tool_bg() { # NAME NODE args...
  local name="$1" n="$2"; shift 2
  in_ns "$n" timeout 90 "$PY" "$NS_TOOL" "$@" > "$S/$name.log" 2>&1 &
  CAP_PIDS+=("$!")
}

wait_log() { # FILE TEXT SECONDS
  local end=$(( $(ms_now) + $3 * 1000 ))
  until grep -q "$2" "$1" 2>/dev/null; do
    [ "$(ms_now)" -lt "$end" ] || return 1
    sleep 0.05
  done
}
