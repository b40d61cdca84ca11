#!/bin/bash
# `wgadm apply` with the default directories under systemd as PID 1 (the VM): it starts
# wg-quick@wg0, which creates a kernel `wireguard` link; the packaged units (wgadm-firewall,
# wgadm daemon) run with their hardening against the kernel; a client in a namespace pings
# through; a later apply changes the link in place; a unit restart and apply agree.
set -euo pipefail
payload=$(cd "$(dirname "$0")" && pwd)
ns=vmlab-client
say() { echo "systemd-apply: $*"; }
fail() { echo "systemd-apply: FAIL: $*" >&2; exit 1; }
cleanup() {
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
# Whether the daemon's journal has a line matching $1.
daemon_logged() { journalctl -u wgadm -o cat | grep -qE "$1"; }
# Polls `cmd` every 0.1 s for up to $1 seconds.
poll() {
  local secs=$1
  shift
  local end=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt $end ] || return 1
    sleep 0.1
  done
}

ln -sf "$payload/bin/wgadm" /usr/bin/wgadm
install -m 0644 "$payload/packaging/wgadm.service" "$payload/packaging/wgadm-firewall.service" \
  /etc/systemd/system/
systemctl daemon-reload

# The client's namespace, reached over a veth from the VM's own namespace.
ip netns add "$ns"
ip link add vmlab0 type veth peer name eth0 netns "$ns"
ip addr add 198.51.100.1/24 dev vmlab0
ip link set vmlab0 up
ip -n "$ns" addr add 198.51.100.10/24 dev eth0
ip -n "$ns" link set eth0 up
ip -n "$ns" link set lo up

wgadm init --endpoint 198.51.100.1 >/dev/null
wgadm peer add alice >/dev/null
wgadm apply
systemctl is-active --quiet wg-quick@wg0 || fail "apply did not start wg-quick@wg0: $(systemctl status wg-quick@wg0 2>&1 | tail -5)"
ip -d link show wg0 | grep -q wireguard || fail "wg0 is no kernel wireguard link"
ifindex=$(cat /sys/class/net/wg0/ifindex)
say "apply started wg-quick@wg0 (kernel link, ifindex $ifindex)"

systemctl start wgadm-firewall.service wgadm.service
systemctl is-active --quiet wgadm-firewall.service || fail "wgadm-firewall.service: $(journalctl -u wgadm-firewall -o cat | tail -5)"
poll 20 daemon_logged event=interface_up ||
  fail "the daemon did not see wg0: $(journalctl -u wgadm -o cat | tail -5)"
say "wgadm-firewall.service and wgadm.service run"

umask 077
wgadm peer config alice >/run/wgc0.conf
ip netns exec "$ns" wg-quick up /run/wgc0.conf 2>/dev/null
start=$(date +%s%N)
poll 20 ip netns exec "$ns" ping -n -c1 -W1 192.168.100.1 || fail "alice gets no answer through wg0"
say "first ping after wg-quick up answered after $((($(date +%s%N) - start) / 1000000)) ms"
poll 20 daemon_logged 'event=peer_connected.*peer=alice' ||
  fail "no peer_connected from the daemon: $(journalctl -u wgadm -o cat | tail -5)"
say "the daemon (hardened unit) logged alice's connect"

wgadm peer add bob --apply >/dev/null
[ "$(cat /sys/class/net/wg0/ifindex)" = "$ifindex" ] || fail "apply recreated wg0"
systemctl is-active --quiet wg-quick@wg0 || fail "wg-quick@wg0 stopped"
wg show wg0 peers | grep -q "$(wgadm --json peer show bob | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')" ||
  fail "bob is not on wg0"
ip netns exec "$ns" ping -n -c1 -W2 192.168.100.1 >/dev/null || fail "alice lost the tunnel"
say "peer add bob --apply changed wg0 in place"

status=$(wgadm status)
echo "$status"
grep -q "1 of 2 peers connected" <<<"$status" || fail "status: $status"

# Boot and apply agree: after a restart of the unit, apply has nothing to do.
systemctl restart wg-quick@wg0
systemctl is-active --quiet wg-quick@wg0 || fail "wg-quick@wg0 did not restart"
out=$(wgadm --json apply)
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d["changed"] is False else 1)' "$out" ||
  fail "apply after a restart of wg-quick@wg0 changed something: $out"
poll 30 ip netns exec "$ns" ping -n -c1 -W1 192.168.100.1 || fail "alice did not come back after the restart"
say "after systemctl restart wg-quick@wg0 apply has nothing to do, alice is back"

# wg-quick down through systemd, then apply brings it up again through systemd.
systemctl stop wg-quick@wg0
[ ! -e /sys/class/net/wg0 ] || fail "wg0 is still there after systemctl stop"
wgadm apply >/dev/null
systemctl is-active --quiet wg-quick@wg0 || fail "apply did not start wg-quick@wg0 again"
say "apply after systemctl stop started the unit again"
systemctl is-active --quiet wgadm.service || fail "the daemon died: $(journalctl -u wgadm -o cat | tail -5)"
journalctl -u wgadm -o cat | grep -E '^ts=' | tail -n 20
