#!/usr/bin/env bash
# Two clients in different groups get different access: client (group staff)
# reaches ports 80 and 8080; client2 (group guests) reaches 80, and 8080 times
# out (dropped, curl exit 28).
. "$(dirname "$0")/lib.sh"
need_gateway
lab_up --client2
check_allowed_http client 80
check_allowed_http client 8080
check_allowed_http client2 80
r="$(curl_probe client2 "http://$SERVER:8080/" 2)"; rc="${r%% *}"
[ "$rc" = 28 ] || fail "client2 (guests) to 8080: expected a timeout (curl exit 28), got exit $rc [$r]"
ok "client2 (guests) to $SERVER:8080 dropped (curl exit 28) while client (staff) gets it"
