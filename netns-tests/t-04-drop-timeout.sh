#!/usr/bin/env bash
# A dropped port (82, forward policy drop) times out: curl --max-time 2 exits 28,
# and no SYN for port 82 reaches the server (which does listen on 82).
. "$(dirname "$0")/lib.sh"
need_gateway
lab_up
check_drop_timeout
