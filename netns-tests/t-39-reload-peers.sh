#!/usr/bin/env bash
# Peers are removed and added by a reload, without a restart: replacing
# client2 by a new peer client3 (same group; a rule naming a group needs a
# member) cuts client2 off (its pings get no reply) while client's running
# flow and WireGuard session carry on; reordering the peers (which renumbers
# client's zone) keeps that flow too; putting client2 back lets it in again
# (a new handshake); `ctl peers` follows the changes.
. "$(dirname "$0")/lib.sh"
need_portcullis
lab_up --client2
wait_ping client "$GW_TUN_ADDR" 10 || fail "client cannot ping the gateway"
wait_ping client2 "$GW_TUN_ADDR" 10 || fail "client2 cannot ping the gateway"
peers() { ctl peers --json | python3 -c 'import json,sys; print(" ".join(sorted(p["name"] for p in json.load(sys.stdin))))'; }
[ "$(peers)" = "client client2" ] || fail "ctl peers before: $(peers)"
cp "$S/gateway.toml" "$S/gateway.toml.orig"
# a flow of client's that must survive both reloads
in_ns client timeout 30 iperf3 -c "$SERVER" -p 5201 -t 10 -i 1 -J > "$S/iperf.json" 2>&1 &
ipid=$!
sleep 2
# replace client2's [[peer]] block by client3's
k3="$("$PORTCULLIS_BIN" genkey | "$PORTCULLIS_BIN" pubkey)" || fail "genkey/pubkey failed"
python3 - "$S/gateway.toml" "$k3" <<'PY' || fail "could not replace client2 in the config"
import re, sys
p = sys.argv[1]; s = open(p).read()
new = '[[peer]]\nname = "client3"\npublic_key = "%s"\nallowed_ips = ["100.64.0.4/32"]\ngroups = ["guests"]\n' % sys.argv[2]
n = re.sub(r'\[\[peer\]\]\nname = "client2"\n(?:[^\n]+\n)*', new, s)
assert n != s
open(p, "w").write(n)
PY
cfg_perms
out="$(ctl reload 2>&1)" || fail "ctl reload (client2 removed) failed: $out"
[ "$(peers)" = "client client3" ] || fail "ctl peers after replacing client2 by client3: $(peers)"
if in_ns client2 ping -c2 -i0.3 -W1 "$GW_TUN_ADDR" >/dev/null 2>&1; then
  fail "client2 still reaches the gateway after its removal"
fi
ok "client2 replaced by client3 in a reload: client2 gets no reply to its pings"
# reorder: client3 first, so client's zone id changes (zones are numbered by
# peer order); client's running flow must follow it, not be cut
python3 - "$S/gateway.toml" <<'PY' || fail "could not reorder the peers"
import re, sys
p = sys.argv[1]; s = open(p).read()
blocks = re.findall(r'\[\[peer\]\]\n(?:(?!\[)[^\n]*\n)*', s)  # up to the next section
c = [b for b in blocks if 'name = "client"\n' in b]
c3 = [b for b in blocks if 'name = "client3"\n' in b]
assert len(c) == 1 and len(c3) == 1, blocks
n = s.replace(c[0], "\x00").replace(c3[0], c[0]).replace("\x00", c3[0])
assert n != s and n.index('name = "client3"') < n.index('name = "client"\n')
open(p, "w").write(n)
PY
cfg_perms
out="$(ctl reload 2>&1)" || fail "ctl reload (peers reordered) failed: $out"
sleep 1
ok "peers reordered by a reload (client's zone renumbered)"
cp "$S/gateway.toml.orig" "$S/gateway.toml"; cfg_perms
out="$(ctl reload 2>&1)" || fail "ctl reload (client2 back) failed: $out"
[ "$(peers)" = "client client2" ] || fail "ctl peers after adding client2 back: $(peers)"
# client2 still holds its old session; WireGuard re-handshakes after
# REKEY_TIMEOUT + KEEPALIVE (~15 s) without a reply
wait_ping client2 "$GW_TUN_ADDR" 30 || fail "client2 cannot reach the gateway after being added back"
ok "client2 added back by reload: it pings the gateway again"
wait "$ipid" || fail "client's iperf3 failed across the peer reloads: $(tail -c 600 "$S/iperf.json")"
python3 - "$S/iperf.json" <<'PY' || fail "client's iperf3 stalled across the peer reloads"
import json, sys
iv = [i["sum"]["bytes"] for i in json.load(open(sys.argv[1]))["intervals"]]
print("interval bytes:", iv)
assert len(iv) >= 9 and min(iv) > 0, iv
PY
ok "client's iperf3 flow carried data in every interval across both reloads"
