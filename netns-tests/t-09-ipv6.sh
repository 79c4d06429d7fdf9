#!/usr/bin/env bash
# IPv6 through the tunnel: ping the gateway and the server, curl an allowed port,
# a rejected port is refused.
. "$(dirname "$0")/lib.sh"
need_gateway
lab_up
check_ipv6
