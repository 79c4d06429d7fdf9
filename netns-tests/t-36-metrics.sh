#!/usr/bin/env bash
# The metrics endpoint ([metrics] listen on the gateway's loopback) scraped
# with curl: HTTP 200, every line parses as Prometheus text format 0.0.4, the
# counters reflect the traffic (forwarded packets, rule hits, the client's
# handshake age, the latency histogram).
. "$(dirname "$0")/lib.sh"
need_portcullis
LAB_PORTCULLIS_EXTRA='[metrics]
listen = "127.0.0.1:9587"' lab_up
check_allowed_http client 80
r="$(curl_probe client "http://$SERVER:81/" 3)"
code="$(in_ns gateway curl -sS -o "$S/metrics.txt" -w '%{http_code}' --max-time 5 http://127.0.0.1:9587/metrics)" || fail "scrape failed"
[ "$code" = 200 ] || fail "scrape: HTTP $code"
python3 - "$S/metrics.txt" <<'PY' || fail "metrics do not parse as Prometheus text"
import re, sys
name = r'[a-zA-Z_:][a-zA-Z0-9_:]*'
label = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
sample = re.compile(r'^(%s)(\{(%s)(,%s)*\})? (NaN|[+-]Inf|[-+]?[0-9.]+(e[-+]?[0-9]+)?)( -?[0-9]+)?$' % (name, label, label))
meta = re.compile(r'^# (HELP %s .*|TYPE %s (counter|gauge|histogram|summary|untyped))$' % (name, name))
n = 0; vals = {}
for i, line in enumerate(open(sys.argv[1]).read().splitlines(), 1):
    if line.startswith('#'):
        assert meta.match(line), "line %d: %r" % (i, line); continue
    m = sample.match(line); assert m, "line %d: %r" % (i, line)
    vals[line.rsplit(' ', 1)[0]] = float(line.rsplit(' ', 1)[1]); n += 1
assert vals['portcullis_packets_total{verdict="forward"}'] > 0
assert vals['portcullis_rule_packets_total{chain="forward",rule="staff"}'] > 0
assert vals['portcullis_drops_total{stage="pipeline",reason="rule"}'] >= 1
age = vals['portcullis_peer_handshake_age_seconds{peer="client"}']
assert 0 <= age < 60, age
assert vals['portcullis_pipeline_latency_seconds_count'] > 0
print("%d samples parse; forwarded %d packets; handshake age %.1f s" % (n, vals['portcullis_packets_total{verdict="forward"}'], age))
PY
c404="$(in_ns gateway curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:9587/nope)"
[ "$c404" = 404 ] || fail "unknown path: HTTP $c404"
ok "metrics scraped with curl: HTTP 200, every line parses ($(grep -vc '^#' "$S/metrics.txt") samples), /nope -> 404"
