#!/usr/bin/env bash
# curl to an allowed server port (80) through the gateway works and returns the server's page.
. "$(dirname "$0")/lib.sh"
need_gateway
lab_up
check_allowed_http client 80
