#!/usr/bin/env bash
# The firewall fails closed across a reboot (issue 10, item 7), in the unprivileged Debian 13
# container with systemd as PID 1: wgadm and its units installed as the package does, IPv4
# forwarding switched on before wgadm runs (the worst case: an admin's sysctl), a client that
# routes everything through the tunnel and pings a management host and the DMZ host every
# 20 ms, and counters in THOSE namespaces:
#   1. boot with an nft that refuses every load: wgadm-firewall.service fails, the interface
#      comes up and forwards nothing (0 unmasqueraded packets at the management host, 0 at the
#      DMZ), the daemon reports the firewall not in force;
#   2. normal boot: the table is in force, the client reaches the management host (masqueraded),
#      never the DMZ.
# Ends with "failclosed: N passed, M failed". Usage: failclosed.sh [NAME]; WGADM_BIN=path to
# the wgadm binary (default: $CARGO_TARGET_DIR or target, debug then release).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

name=${1:-fc$$}
target=${CARGO_TARGET_DIR:-$repo/target}
wgadm=${WGADM_BIN:-}
for b in "$target/debug/wgadm" "$target/release/wgadm"; do
  [ -n "$wgadm" ] || { [ -x "$b" ] && wgadm=$b; }
done
[ -x "$wgadm" ] || { echo "failclosed: no wgadm binary: cargo build -p wgadm, or set WGADM_BIN" >&2; exit 1; }

passed=0
failed=0
exec 3>&1
out_file=$(mktemp)
work=$(mktemp -d)
client_if=wgfc$$
client_pid=

check() { lxcrig_check "$@"; }

ct() { lxcrig_exec "$name" "$@"; }
in_ns() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}
# poll SECONDS CMD...: until CMD succeeds, every 0.2 s.
poll() {
  local until=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$until" ] || { echo "timed out: $*"; return 1; }
    sleep 0.2
  done
}

cleanup() {
  # The client's wireguard-go, by the PID its wrapper recorded.
  if [ -s "$work/wg-go.pid" ]; then kill "$(cat "$work/wg-go.pid")" 2>/dev/null || true; fi
  lxcrig_down "$name" >/dev/null 2>&1 || true
  rm -rf "$work" "$out_file"
}
trap cleanup EXIT

lxcrig_need_root
lxcrig_setup
lxcrig_up "$name" 2>&3
lxcrig_names "$name"
# shellcheck disable=SC1091
. "$LXCRIG_RUN/env"
c0=${WGADM_LXC_NS_CLIENTS%% *}
mgmt_host=${WGADM_LXC_MGMT_HOSTS%% *}

t_install() {
  ct apt-get update -q >/dev/null
  ct env DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends \
    wireguard-tools nftables wireguard-go >/dev/null
  lxcrig_ct_write usr/bin/wgadm 755 <"$wgadm"
  lxcrig_ct_write lib/systemd/system/wgadm.service 644 <"$repo/packaging/wgadm.service"
  lxcrig_ct_write lib/systemd/system/wgadm-firewall.service 644 <"$repo/packaging/wgadm-firewall.service"
  ct mkdir -p /lib/systemd/system/wg-quick@.service.d /etc/systemd/system/wg-quick@wg0.service.d
  lxcrig_ct_write lib/systemd/system/wg-quick@.service.d/wgadm.conf 644 <"$repo/packaging/wg-quick-wgadm.conf"
  printf '[Service]\nEnvironment=WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go\n' |
    lxcrig_ct_write etc/systemd/system/wg-quick@wg0.service.d/userspace.conf 644
  # Forwarding on before wgadm runs at all, as an admin's sysctl.d would.
  printf '[Unit]\nDefaultDependencies=no\nBefore=network-pre.target wgadm-firewall.service\n[Service]\nType=oneshot\nExecStart=/bin/sh -c "echo 1 > /proc/sys/net/ipv4/ip_forward"\n[Install]\nWantedBy=multi-user.target\n' |
    lxcrig_ct_write etc/systemd/system/forward-on.service 644
  ct systemctl daemon-reload
  ct wgadm --state /etc/wgadm init --endpoint "$WGADM_LXC_ENDPOINT" >/dev/null
  ct wgadm --state /etc/wgadm peer add alice >/dev/null
  ct systemctl enable -q forward-on.service wgadm-firewall.service wg-quick@wg0.service wgadm.service
  ct systemctl start forward-on.service
  ct wgadm --state /etc/wgadm apply
  ct systemctl start wgadm.service
  ct systemctl is-active wg-quick@wg0.service
}
check "wgadm installed as the package does, applied, units enabled" t_install

t_client() {
  ct wgadm --state /etc/wgadm peer config alice | sed 's|^AllowedIPs.*|AllowedIPs = 0.0.0.0/0|' >"$work/$client_if.conf"
  chmod 600 "$work/$client_if.conf"
  # wireguard-go in the foreground (its PID recorded for cleanup); wg-quick goes on once the
  # UAPI socket exists.
  cat >"$work/wg-go" <<EOS
#!/bin/sh
wireguard-go -f "\$1" </dev/null >/dev/null 2>&1 &
echo \$! >"$work/wg-go.pid"
i=0
while [ ! -S "/var/run/wireguard/\$1.sock" ] && [ \$i -lt 1000 ]; do i=\$((i + 1)); sleep 0.01; done
EOS
  chmod 755 "$work/wg-go"
  in_ns "$c0" env WG_QUICK_USERSPACE_IMPLEMENTATION="$work/wg-go" wg-quick up "$work/$client_if.conf"
  poll 30 in_ns "$c0" ping -c1 -W1 "$mgmt_host"
}
check "a full-tunnel client reaches the management host" t_client

# Counters where the packets would arrive: unmasqueraded VPN sources at the management host
# (with the table in force they arrive from the container's 192.168.1.90), anything at the DMZ.
for pair in "$WGADM_LXC_NS_MGMT:ip saddr 192.168.100.0/24 counter name seen" \
  "$WGADM_LXC_NS_DMZ:icmp type echo-request counter name seen"; do
  ns=${pair%%:*}
  rule=${pair#*:}
  printf 'table inet arrivals {\n counter seen {}\n chain pre {\n  type filter hook prerouting priority -300; policy accept;\n  %s\n }\n}\n' "$rule" |
    in_ns "$ns" nft -f -
done
seen() { in_ns "$1" nft list counter inet arrivals seen | awk '/packets/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }'; }
reset() { in_ns "$WGADM_LXC_NS_MGMT" nft reset counter inet arrivals seen >/dev/null; in_ns "$WGADM_LXC_NS_DMZ" nft reset counter inet arrivals seen >/dev/null; }

# The server side of a fresh session after the reboot: the client re-handshakes within 15-22 s.
# A client re-handshakes only when it has something to send: a ping each try (they count too).
handshaken() {
  in_ns "$c0" ping -c1 -W1 "$mgmt_host" >/dev/null 2>&1 || true
  [ "$(ct wg show wg0 latest-handshakes | awk '{ print $2 }')" -gt 0 ] 2>/dev/null
}
# 20 ms pings to both targets for 3 s (in the background, both at once).
pings() {
  in_ns "$c0" ping -n -q -i 0.02 -w 3 "$mgmt_host" >"$work/ping-mgmt" 2>&1 &
  local p=$!
  in_ns "$c0" ping -n -q -i 0.02 -w 3 "$WGADM_LXC_DMZ_HOST" >"$work/ping-dmz" 2>&1 || true
  wait "$p" || true
}
in_force() { ct python3 -c 'import json,sys; sys.exit(0 if json.load(open("/run/wgadm/status.json"))["firewall"]["in_force"] is '"$1"' else 1)'; }

t_refused_boot() {
  printf '#!/bin/sh\nfor a in "$@"; do [ "$a" = -f ] && { echo "Error: Could not process rule: No such file or directory" >&2; exit 1; }; done\nexec /usr/sbin/nft "$@"\n' |
    lxcrig_ct_write usr/local/sbin/nft 755
  # wgadm reaches nftables through libnftables in-process, which a fake program cannot refuse
  # for: WGADM_NFT makes the firewall unit and the daemon run the refusing program instead.
  # (That both ways a refusal is the same error is firewall_nft.rs's job.)
  for unit in wgadm-firewall wgadm; do
    ct mkdir -p "/etc/systemd/system/$unit.service.d"
    printf '[Service]\nEnvironment=WGADM_NFT=/usr/local/sbin/nft\n' |
      lxcrig_ct_write "etc/systemd/system/$unit.service.d/zz-refusing-nft.conf" 644
  done
  reset
  lxcrig_restart "$name" 2>&3
  poll 60 ct systemctl is-failed -q wgadm-firewall.service
  poll 60 ct systemctl is-active -q wg-quick@wg0.service wgadm.service
  echo "     ip_forward=$(ct cat /proc/sys/net/ipv4/ip_forward) wg0 forwarding=$(ct cat /proc/sys/net/ipv4/conf/wg0/forwarding) rule: $(ct ip -4 rule show priority 100 | tr -d '\n')" >&3
  [ "$(ct cat /proc/sys/net/ipv4/ip_forward)" = 1 ]
  ! ct nft list table inet wgadm >/dev/null 2>&1
  poll 60 handshaken
  pings
  echo "     refused at boot: $(grep -o '[0-9]* packets transmitted' "$work/ping-mgmt") to the management host (and the DMZ) at 20 ms; arrived unfiltered: $(seen "$WGADM_LXC_NS_MGMT") at the management host, $(seen "$WGADM_LXC_NS_DMZ") at the DMZ" >&3
  [ "$(seen "$WGADM_LXC_NS_MGMT")" = 0 ]
  [ "$(seen "$WGADM_LXC_NS_DMZ")" = 0 ]
  poll 30 in_force False
  ct journalctl -u wgadm-firewall.service -b --no-pager | grep -q 'nft refused the ruleset'
}
check "boot with an nft that refuses: the interface forwards nothing, the daemon says so" t_refused_boot

t_normal_boot() {
  ct rm /usr/local/sbin/nft /etc/systemd/system/wgadm-firewall.service.d/zz-refusing-nft.conf \
    /etc/systemd/system/wgadm.service.d/zz-refusing-nft.conf
  reset
  lxcrig_restart "$name" 2>&3
  poll 60 ct systemctl is-active -q wgadm-firewall.service wg-quick@wg0.service wgadm.service
  ct nft list table inet wgadm >/dev/null
  poll 60 in_ns "$c0" ping -c1 -W1 "$mgmt_host"
  pings
  echo "     normal boot: management host $(grep -o '[0-9]* received' "$work/ping-mgmt"), DMZ $(grep -o '[0-9]* received' "$work/ping-dmz"); unfiltered: $(seen "$WGADM_LXC_NS_MGMT") at the management host, $(seen "$WGADM_LXC_NS_DMZ") at the DMZ" >&3
  grep -q ' 0 received' "$work/ping-dmz"
  [ "$(seen "$WGADM_LXC_NS_MGMT")" = 0 ]
  [ "$(seen "$WGADM_LXC_NS_DMZ")" = 0 ]
  poll 30 in_force True
}
check "normal boot: table in force, the management host reached, the DMZ not" t_normal_boot

t_restart_nftables() {
  reset
  ct systemctl restart nftables.service
  poll 10 ct nft list table inet wgadm
  # (At warning priority in the journal once the daemon's lines carry their priority, issue 10
  # item 10; the line itself says level=warn.)
  poll 30 ct sh -c 'journalctl -u wgadm --no-pager | grep firewall_restored | grep -q level=warn'
  pings
  [ "$(seen "$WGADM_LXC_NS_MGMT")" = 0 ]
  [ "$(seen "$WGADM_LXC_NS_DMZ")" = 0 ]
  grep -q ' 0 received' "$work/ping-dmz"
  ! grep -q ' 0 received' "$work/ping-mgmt"
  echo "     $(ct journalctl -u wgadm --no-pager -o cat | grep firewall_restored | tail -1)" >&3
}
check "systemctl restart nftables: the table is back, the journal shows it (level=warn)" t_restart_nftables

in_ns "$c0" wg-quick down "$work/$client_if.conf" >/dev/null 2>&1 || true
echo "failclosed: $passed passed, $failed failed"
[ "$failed" = 0 ]
