#!/usr/bin/env bash
# Smoke test of the lab itself, with stock components only: a stock
# wireguard-go client through a stock wireguard-go gateway (kernel nftables
# forwarding, the DESIGN.md baseline) to the server. The same checks the
# portcullis tests make; this one must pass on any machine with the packages.
. "$(dirname "$0")/lib.sh"
# shellcheck disable=SC2034  # read by lib.sh
GATEWAY_KIND=wireguard-go
lab_up --gateway wireguard-go
check_handshake_ping
check_allowed_http client 80
check_allowed_http client 8080
check_reject_rst
check_drop_timeout
check_ipv6
