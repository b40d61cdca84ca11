# shellcheck shell=bash
# The LXC test rig: an unprivileged Debian 13 container mirroring CT 90, with systemd as PID 1,
# in a lab of network namespaces. Sourced by setup.sh, up.sh, down.sh, restart.sh, exec.sh,
# smoke.sh, and by tests that want the functions (README.md in this directory). This file holds
# the settings, the names and the small helpers; lib/ holds the rig's parts, one job each.
#
#   controller ns  192.168.1.2  --+
#   mgmt ns  192.168.1.10, .11  --+-- br-lan (192.168.1.1, the router) in the "net" namespace
#   container eth0 192.168.1.90 --+         | dmz0 172.16.10.1 -- dmz ns 172.16.10.5
#   container eth1 198.51.100.1 --+-- br-wan (no address: a plain switch)
#   client ns i 198.51.100.(10+i) -+
#
# Everything is named after the rig's NAME, so rigs can run side by side. Nothing is connected to
# the host's network; the one exception is the apt relay (a socat pair joined by a UNIX socket,
# which is not network-namespaced): 192.168.1.1:80 in the lab -> the Debian mirror the host's apt
# uses, and nothing else.

# ---- settings (environment overrides) ---------------------------------------------------------

LXCRIG_CACHE=${WGADM_LXC_CACHE:-/var/cache/wgadm-test/lxc}
LXCRIG_SUITE=${WGADM_LXC_SUITE:-trixie}
LXCRIG_RUNBASE=${WGADM_LXC_RUNBASE:-/tmp}
LXCRIG_LXCPATH=${WGADM_LXC_LXCPATH:-/var/lib/lxc}
LXCRIG_CLIENTS=${WGADM_LXC_CLIENTS:-3}
LXCRIG_BOOT_TIMEOUT=${WGADM_LXC_BOOT_TIMEOUT:-90}
# The VPN subnet the router sends back to the container (for wgadm's routed mode).
LXCRIG_VPN_SUBNET=${WGADM_LXC_VPN_SUBNET:-192.168.100.0/24}
# What the container gets: like CT 90 (cores 1, memory 1024). Empty: no limit.
LXCRIG_CPUS=${WGADM_LXC_CPUS-0}
LXCRIG_MEMORY_MB=${WGADM_LXC_MEMORY_MB-1024}
# The rootfs is a tmpfs of this size (the CT's 8 GB disk). Empty: a plain directory on disk.
LXCRIG_DISK=${WGADM_LXC_DISK-8G}
# The id map: container uid 0..65535 is host uid 131072..196607 (Proxmox uses 100000).
LXCRIG_MAP_BASE=131072
LXCRIG_MAP_SIZE=65536

# What the rootfs holds: what systemd needs to boot, sshd, and what Ansible's modules need
# (python3, python3-apt for the apt module). NOT wireguard-tools or nftables: the role installs
# those from the mirror.
LXCRIG_INCLUDE=systemd,systemd-sysv,dbus,openssh-server,python3,python3-apt,iproute2,iputils-ping,procps,ca-certificates,netbase
# Bump when rootfs_customize changes, so the cache key changes.
LXCRIG_RECIPE=1

# Addresses (fixed: every rig has its own namespaces, so they never clash).
LXCRIG_ROUTER=192.168.1.1
LXCRIG_CONTROLLER=192.168.1.2
LXCRIG_CT_MGMT=192.168.1.90
LXCRIG_CT_WAN=198.51.100.1
LXCRIG_MGMT_HOSTS=(192.168.1.10 192.168.1.11)
LXCRIG_DMZ_ROUTER=172.16.10.1
LXCRIG_DMZ_HOST=172.16.10.5

# ---- small helpers ----------------------------------------------------------------------------

lxcrig_log() { printf 'lxc-rig: %s\n' "$*" >&2; }
# Logs an error and fails. Write `... || { lxcrig_die MSG; return 1; }`: a function called on
# the left of || or in an `if` runs without errexit, where a bare lxcrig_die would not stop it.
lxcrig_die() {
  lxcrig_log "error: $*"
  return 1
}
lxcrig_now() { date +%s.%N; }
# Seconds since $1 (a lxcrig_now value), one decimal.
lxcrig_since() { awk -v a="$1" -v b="$(lxcrig_now)" 'BEGIN { printf "%.1f", b - a }'; }

lxcrig_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

lxcrig_need_root() {
  [ "$(id -u)" = 0 ] || { lxcrig_die "must run as root (network namespaces, LXC)"; return 1; }
}

# The rig's names, from NAME: sets LXCRIG_NAME, _CT (container), _RUN (its temp dir), _NS_*.
lxcrig_names() {
  local name=${1:-}
  if ! [[ $name =~ ^[a-z0-9]{1,24}$ ]]; then
    lxcrig_die "bad rig name '$name': 1-24 of a-z, 0-9 (no '-': one name would be a prefix of another's namespaces)"
    return 1
  fi
  LXCRIG_NAME=$name
  LXCRIG_CT="wgadm-lxc-$name"
  LXCRIG_RUN="$LXCRIG_RUNBASE/wgadm-lxc-$name"
  LXCRIG_NS_PREFIX="wgadm-lxc-$name-"
  LXCRIG_NS_NET="${LXCRIG_NS_PREFIX}net"
  LXCRIG_NS_CTL="${LXCRIG_NS_PREFIX}ctl"
  LXCRIG_NS_MGMT="${LXCRIG_NS_PREFIX}mgmt"
  LXCRIG_NS_DMZ="${LXCRIG_NS_PREFIX}dmz"
}

lxcrig_client_ns() { printf '%sc%d' "$LXCRIG_NS_PREFIX" "$1"; }
lxcrig_client_addr() { printf '198.51.100.%d' $((10 + $1)); }

# ---- the parts -------------------------------------------------------------------------------

# shellcheck source-path=SCRIPTDIR source=lib/rootfs.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/rootfs.sh"
# shellcheck source-path=SCRIPTDIR source=lib/procs.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/procs.sh"
# shellcheck source-path=SCRIPTDIR source=lib/net.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/net.sh"
# shellcheck source-path=SCRIPTDIR source=lib/container.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/container.sh"
# shellcheck source-path=SCRIPTDIR source=lib/down.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/down.sh"
# shellcheck source-path=SCRIPTDIR source=lib/check.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/check.sh"
