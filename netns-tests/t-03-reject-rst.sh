#!/usr/bin/env bash
# A rejected port (81, action "reject") is refused by an RST from the gateway in
# under 1 s: curl exit 7 (connection refused) and not 28 (timeout), and no SYN
# for port 81 reaches the server (which does listen on 81).
. "$(dirname "$0")/lib.sh"
need_gateway
lab_up
check_reject_rst
