#!/usr/bin/env bash
# A stock wireguard-go client handshakes with the gateway and pings its tunnel address.
. "$(dirname "$0")/lib.sh"
need_gateway
lab_up
check_handshake_ping

# The gateway dropped its privileges: it runs as nobody with no capabilities.
if [ "${NETNS_GATEWAY:-portcullis}" = portcullis ]; then
  pid="$("$LAB" pid --id "$ID" gateway)"
  st="/proc/$pid/status"
  uid="$(awk '/^Uid:/{print $2, $3, $4, $5}' "$st")"
  capeff="$(awk '/^CapEff:/{print $2}' "$st")"
  capprm="$(awk '/^CapPrm:/{print $2}' "$st")"
  [ "$uid" = "65534 65534 65534 65534" ] || fail "gateway uids are '$uid', expected nobody (65534) everywhere"
  [ "$capeff" = 0000000000000000 ] && [ "$capprm" = 0000000000000000 ] || fail "gateway kept capabilities: CapEff=$capeff CapPrm=$capprm"
  ok "gateway runs as nobody with no capabilities (pid $pid)"
fi
