#!/usr/bin/env bash
# [capture] what = "drops": the pcap file opens with tcpdump -r (raw IP) and
# holds the dropped SYNs to port 82 and the rejected SYN to port 81, and no
# packet of the allowed port 80.
. "$(dirname "$0")/lib.sh"
need_portcullis
# a relative path is relative to the config's directory: $S/ops is the gateway's
LAB_PORTCULLIS_EXTRA='[capture]
file = "ops/drops.pcap"
what = "drops"
max_bytes = 1048576
files = 2' lab_up
check_allowed_http client 80
curl_probe client "http://$SERVER:82/" 2 >/dev/null
curl_probe client "http://$SERVER:81/" 2 >/dev/null
sleep 1
f="$S/ops/drops.pcap"
[ -s "$f" ] || fail "no capture file $f"
tcpdump -nn -r "$f" > "$S/pcap.txt" 2>"$S/pcap.err" || fail "tcpdump -r failed: $(cat "$S/pcap.err")"
syn82="$(grep -c '> 203.0.113.2.82: Flags \[S\]' "$S/pcap.txt" || true)"
syn81="$(grep -c '> 203.0.113.2.81: Flags \[S\]' "$S/pcap.txt" || true)"
p80="$(grep -c '203.0.113.2.80:' "$S/pcap.txt" || true)"
[ "$syn82" -ge 2 ] || fail "expected >= 2 dropped SYNs to :82 in the capture, found $syn82: $(head -5 "$S/pcap.txt")"
[ "$syn81" -ge 1 ] || fail "expected the rejected SYN to :81, found $syn81"
[ "$p80" = 0 ] || fail "$p80 packets of the allowed port 80 in a drops-only capture"
head -1 "$S/pcap.err" | grep -q "RAW" || say "note: tcpdump link type line: $(head -1 "$S/pcap.err")"
ok "tcpdump -r reads the capture ($(head -1 "$S/pcap.err")): $syn82 dropped SYNs to :82, $syn81 rejected SYN to :81, 0 packets of :80"
