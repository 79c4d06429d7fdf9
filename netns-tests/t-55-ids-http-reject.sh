#!/usr/bin/env bash
# IDS in prevent mode: a Suricata `reject` signature on an HTTP URI (/evil)
# blocks the request carrying it — the client's connection is reset and curl
# fails — while a normal request to the same server passes.
. "$(dirname "$0")/lib.sh"
need_portcullis
export LAB_PORTCULLIS_RULES='reject http any any -> any any (msg:"lab evil uri"; flow:to_server,established; http.uri; content:"/evil"; sid:5500001; rev:1;)'
export LAB_PORTCULLIS_EXTRA='
[ids]
enabled = true
mode = "prevent"
rule_files = ["ids.rules"]
'
lab_up
check_allowed_http client 80
r="$(curl_probe client "http://$SERVER:80/evil" 5)"; rc="${r%% *}"; code="${r##* }"
case "$rc" in
  52|56) ;;  # empty reply / connection reset
  *) fail "request for /evil: expected curl exit 56 (reset) or 52, got $rc, HTTP $code ($(cat "$S/last_curl_err"))" ;;
esac
[ "$code" = 000 ] || fail "request for /evil got an HTTP answer ($code)"
ok "request for /evil blocked: curl exit $rc ($(cat "$S/last_curl_err"))"
check_allowed_http client 80
