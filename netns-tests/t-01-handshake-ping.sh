#!/usr/bin/env bash
# A stock wireguard-go client handshakes with the gateway and pings its tunnel address.
. "$(dirname "$0")/lib.sh"
need_gateway
lab_up
check_handshake_ping
