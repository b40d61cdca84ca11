#!/usr/bin/env bash
# Smoke test of the LXC test rig: brings a rig up, checks the container is what CT 90 is
# (unprivileged, systemd as PID 1, /dev/net/tun, onboot, limits), that SSH, apt and the lab work,
# that a restart brings it back, then tears it down and checks nothing is left.
# Ends with "lxc: N passed, M failed". Usage: smoke.sh [NAME]  (default: smoke<PID>)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"

name=${1:-smoke$$}
passed=0
failed=0

# Timings and notes go to fd 3 (the terminal); a check's own output shows only when it fails.
exec 3>&1
out_file=$(mktemp)

# check WHAT FUNCTION: runs FUNCTION in a subshell with errexit (not in an `if`, where bash would
# ignore errexit inside it), so its first failing command fails the check.
check() { lxcrig_check "$@"; }

ct() { lxcrig_exec "$name" "$@"; }
in_ns() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

cleanup() {
  lxcrig_down "$name" >/dev/null 2>&1 || true
  lxcrig_down "${name}h" >/dev/null 2>&1 || true
  rm -f "$out_file"
}
trap cleanup EXIT

lxcrig_need_root
lxcrig_setup

t_up() { lxcrig_up "$name" 2>&3; }
check "up: container booted, sshd answers" t_up
lxcrig_names "$name"
if [ ! -f "$LXCRIG_RUN/env" ]; then
  echo "lxc: $passed passed, $((failed + 1)) failed"
  exit 1
fi
# shellcheck disable=SC1091
. "$LXCRIG_RUN/env"

t_unpriv() {
  local map
  map=$(ct cat /proc/1/uid_map | tr -s ' \t' ' ' | sed 's/^ //')
  [ "$map" = "0 $LXCRIG_MAP_BASE $LXCRIG_MAP_SIZE" ] || { echo "uid_map: $map"; return 1; }
  map=$(ct cat /proc/1/gid_map | tr -s ' \t' ' ' | sed 's/^ //')
  [ "$map" = "0 $LXCRIG_MAP_BASE $LXCRIG_MAP_SIZE" ] || { echo "gid_map: $map"; return 1; }
  # and from the host: the container's init runs as the mapped uid
  local pid
  pid=$(lxc-info -P "$WGADM_LXC_LXCPATH" -n "$WGADM_LXC_CT" -pH)
  [ "$(stat -c %u "/proc/$pid")" = "$LXCRIG_MAP_BASE" ] || { echo "init's host uid: $(stat -c %u "/proc/$pid")"; return 1; }
}
check "unprivileged: uid and gid map 0 $LXCRIG_MAP_BASE $LXCRIG_MAP_SIZE" t_unpriv

t_systemd() {
  local comm state
  comm=$(ct cat /proc/1/comm)
  [ "$comm" = systemd ] || { echo "PID 1 is $comm"; return 1; }
  state=$(ct systemctl is-system-running) || true
  case $state in running | degraded) ;; *) echo "is-system-running: $state"; return 1 ;; esac
  [ "$state" = running ] || ct systemctl --failed --no-legend
  [ "$(ct stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ] || { echo "/sys/fs/cgroup is not cgroup2"; return 1; }
}
check "systemd is PID 1 on cgroup2 and running" t_systemd

t_tun() {
  ct test -c /dev/net/tun
  [ "$(ct stat -c '%t:%T' /dev/net/tun)" = "a:c8" ] || { echo "not 10:200"; return 1; }
  # a tun device can be made: what wireguard-go does
  ct ip tuntap add dev rigtun0 mode tun
  ct ip link del rigtun0
}
check "/dev/net/tun inside, usable (ip tuntap add)" t_tun

t_ssh_plain() {
  in_ns "$WGADM_LXC_NS_CONTROLLER" ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o BatchMode=yes -o LogLevel=ERROR -i "$WGADM_LXC_SSH_KEY" "root@$WGADM_LXC_ADDR" true
}
check "ssh root@$WGADM_LXC_ADDR with the key from the controller namespace" t_ssh_plain

t_ssh_strict() {
  [ "$(in_ns "$WGADM_LXC_NS_CONTROLLER" ssh -F "$WGADM_LXC_SSH_CONFIG" "$WGADM_LXC_ADDR" id -u)" = 0 ]
  # password auth is not what got us in: without the key it fails
  ! in_ns "$WGADM_LXC_NS_CONTROLLER" ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o IdentityFile=/dev/null -o IdentitiesOnly=yes \
    -o LogLevel=ERROR "root@$WGADM_LXC_ADDR" true
}
check "ssh with strict host key checking (known_hosts), and no way in without the key" t_ssh_strict

t_python() {
  in_ns "$WGADM_LXC_NS_CONTROLLER" ssh -F "$WGADM_LXC_SSH_CONFIG" "$WGADM_LXC_ADDR" \
    'python3 -c "import apt, json, sys; print(sys.version_info >= (3, 8))"' | grep -qx True
}
check "python3 and python3-apt for Ansible's modules" t_python

t_apt() {
  local t
  t=$(lxcrig_now)
  ct apt-get update -q -o APT::Update::Error-Mode=any >/dev/null
  ct apt-get install -q -y --no-install-recommends --download-only wireguard-tools nftables >/dev/null
  ct sh -c 'ls /var/cache/apt/archives/wireguard-tools_*.deb /var/cache/apt/archives/nftables_*.deb' >/dev/null
  ct apt-get clean
  echo "     apt-get update + download of wireguard-tools, nftables: $(lxcrig_since "$t") s" >&3
}
check "apt inside: update and download wireguard-tools, nftables from the mirror (relay)" t_apt

t_lab() {
  ct ping -c1 -W2 "${LXCRIG_MGMT_HOSTS[0]}" >/dev/null
  ct ping -c1 -W2 "${LXCRIG_MGMT_HOSTS[1]}" >/dev/null
  ct ping -c1 -W2 "$WGADM_LXC_DMZ_HOST" >/dev/null
  local c
  for c in $WGADM_LXC_NS_CLIENTS; do
    in_ns "$c" ping -c1 -W2 "$WGADM_LXC_WAN_ADDR" >/dev/null
    # no way from a client to the management LAN but the tunnel
    if in_ns "$c" ping -c1 -W1 "${LXCRIG_MGMT_HOSTS[0]}" >/dev/null 2>&1; then
      echo "$c reaches ${LXCRIG_MGMT_HOSTS[0]} without a tunnel"
      return 1
    fi
  done
  # the lab has no way out: no default route in the router or the container's LAN
  [ -z "$(ip -n "$WGADM_LXC_NS_NET" route show default)" ] || { echo "router has a default route"; return 1; }
}
check "lab: container reaches mgmt hosts and (via the router) the DMZ; clients reach $LXCRIG_CT_WAN only" t_lab

t_onboot() {
  lxc-ls -P "$WGADM_LXC_LXCPATH" -f -F NAME,AUTOSTART | awk -v c="$WGADM_LXC_CT" '$1 == c { print $2 }' | grep -qx 1
}
check "onboot: autostart 1 (lxc.start.auto)" t_onboot

t_limits() {
  local cg
  cg=$(lxcrig_cgroup_prefix)
  if [ -n "$LXCRIG_MEMORY_MB" ]; then
    local mem
    if [ "$cg" = cgroup2 ]; then
      mem=$(lxc-cgroup -P "$WGADM_LXC_LXCPATH" -n "$WGADM_LXC_CT" memory.max)
    else
      mem=$(lxc-cgroup -P "$WGADM_LXC_LXCPATH" -n "$WGADM_LXC_CT" memory.limit_in_bytes)
    fi
    [ "$mem" = $((LXCRIG_MEMORY_MB * 1024 * 1024)) ] || { echo "memory limit: $mem"; return 1; }
  fi
  if [ -n "$LXCRIG_CPUS" ]; then
    [ "$(lxc-cgroup -P "$WGADM_LXC_LXCPATH" -n "$WGADM_LXC_CT" cpuset.cpus)" = "$LXCRIG_CPUS" ]
    [ "$(ct nproc)" = 1 ] || { echo "nproc inside: $(ct nproc)"; return 1; }
  fi
}
check "limits: 1 CPU, ${LXCRIG_MEMORY_MB:-no} MB" t_limits

t_restart() {
  ct touch /root/before-restart
  lxcrig_restart "$name" 2>&3
  ct test -e /root/before-restart
  t_systemd
  t_ssh_strict
  ct ping -c1 -W2 "${LXCRIG_MGMT_HOSTS[0]}" >/dev/null
  in_ns "$(lxcrig_client_ns 0)" ping -c1 -W2 "$WGADM_LXC_WAN_ADDR" >/dev/null
}
check "restart (lxc-stop + lxc-start): systemd, sshd and the network come back" t_restart

t_down() {
  lxcrig_down "$name"
  lxcrig_down "$name"
  local left
  left=$(lxcrig_footprint "$name")
  [ -z "$left" ] || { echo "left behind: $left"; return 1; }
  ! ip netns list | grep -q "^wgadm-lxc-$name-" || return 1
  ! lxc-ls -P "$LXCRIG_LXCPATH" -1 | grep -qx "wgadm-lxc-$name" || return 1
  # no socat of ours still running (by the paths only this rig uses)
  ! pgrep -f "wgadm-lxc-$name/apt.sock" >/dev/null
}
check "down (twice): no container, namespaces, processes or temp dir left" t_down

t_fail_halfway() {
  # a rig whose setup stopped halfway: namespaces made, no container
  lxcrig_names "${name}h"
  mkdir -p "$LXCRIG_RUN"
  ip netns add "$LXCRIG_NS_NET"
  ip netns add "$LXCRIG_NS_CTL"
  lxcrig_down "${name}h"
  [ -z "$(lxcrig_footprint "${name}h")" ]
}
check "down after a failure halfway" t_fail_halfway

echo "lxc: $passed passed, $failed failed"
[ "$failed" = 0 ]
