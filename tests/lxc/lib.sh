# shellcheck shell=bash
# The LXC test rig: an unprivileged Debian 13 container mirroring CT 90, with systemd as PID 1,
# in a lab of network namespaces. Sourced by setup.sh, up.sh, down.sh, restart.sh, exec.sh,
# smoke.sh, and by tests that want the functions (README.md in this directory).
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

# ---- packages and the cached rootfs (setup.sh) ------------------------------------------------

lxcrig_install_packages() {
  local p missing=()
  for p in lxc debootstrap uidmap openssh-client socat zstd iproute2 procps; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    lxcrig_log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

# root may map LXCRIG_MAP_BASE.. (lxc-usernsexec and LXC itself read these as root, other tools
# and any later rootless use need them).
lxcrig_ensure_subids() {
  local f
  for f in /etc/subuid /etc/subgid; do
    [ -e "$f" ] || : >"$f"
    if ! grep -qx "root:$LXCRIG_MAP_BASE:$LXCRIG_MAP_SIZE" "$f"; then
      echo "root:$LXCRIG_MAP_BASE:$LXCRIG_MAP_SIZE" >>"$f"
      lxcrig_log "added root:$LXCRIG_MAP_BASE:$LXCRIG_MAP_SIZE to $f"
    fi
  done
}

# The Debian mirror the host's apt uses (the one URI ending in /debian in its sources), e.g.
# http://deb.debian.org/debian. The rootfs is built from it and the container's apt reaches it.
lxcrig_host_mirror() {
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
    2>/dev/null | grep -v '^[[:space:]]*#' |
    grep -oE '(https?)://[^[:space:]]+/debian/?([[:space:]]|$)' | head -n1 | tr -d '[:space:]') || true
  [ -n "$uri" ] || uri=http://deb.debian.org/debian
  printf '%s\n' "${uri%/}"
}

# scheme host port of a URI.
lxcrig_uri_parts() {
  local uri=$1 scheme rest host port
  scheme=${uri%%://*}
  rest=${uri#*://}
  host=${rest%%/*}
  port=80
  [ "$scheme" = https ] && port=443
  if [[ $host == *:* ]]; then
    port=${host##*:}
    host=${host%:*}
  fi
  printf '%s %s %s\n' "$scheme" "$host" "$port"
}

# The cache key: what goes into the rootfs.
lxcrig_rootfs_key() {
  printf '%s\n' "$LXCRIG_SUITE" "$(lxcrig_host_mirror)" "$LXCRIG_INCLUDE" "$LXCRIG_RECIPE" |
    sha256sum | cut -c1-12
}

lxcrig_rootfs_tarball() {
  printf '%s/%s-rootfs-%s.tar.zst\n' "$LXCRIG_CACHE" "$LXCRIG_SUITE" "$(lxcrig_rootfs_key)"
}

# Turns a fresh debootstrap into the pristine rootfs every container starts from.
lxcrig_rootfs_customize() {
  local root=$1 mirror=$2
  # The Debian 13 layout: deb822 sources with the suite, its updates and security.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $LXCRIG_SUITE $LXCRIG_SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: $LXCRIG_SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # Per container, not per image: host keys and machine id (systemd makes one at boot).
  rm -f "$root"/etc/ssh/ssh_host_*
  : >"$root/etc/machine-id"
  rm -f "$root/var/lib/dbus/machine-id"
  rm -f "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
  echo wgadm >"$root/etc/hostname"
  : >"$root/etc/resolv.conf"
  # No getty on the container's consoles: nobody logs in there, lxc-attach is the way in.
  ln -sf /dev/null "$root/etc/systemd/system/console-getty.service"
  ln -sf /dev/null "$root/etc/systemd/system/getty@.service"
  ln -sf /dev/null "$root/etc/systemd/system/container-getty@.service"
}

# Builds the pristine rootfs tarball unless the cache has it. Prints timings.
lxcrig_build_rootfs() {
  local tarball key mirror build t0 t1
  tarball=$(lxcrig_rootfs_tarball)
  if [ -s "$tarball" ]; then
    lxcrig_log "rootfs cached: $tarball"
    return 0
  fi
  mkdir -p "$LXCRIG_CACHE/debs"
  key=$(lxcrig_rootfs_key)
  mirror=$(lxcrig_host_mirror)
  build="$LXCRIG_CACHE/build-$key.$$"
  rm -rf "$build"
  t0=$(lxcrig_now)
  lxcrig_log "debootstrap $LXCRIG_SUITE from $mirror (minbase + $LXCRIG_INCLUDE)"
  if ! debootstrap --variant=minbase --include="$LXCRIG_INCLUDE" \
    --cache-dir="$LXCRIG_CACHE/debs" "$LXCRIG_SUITE" "$build" "$mirror" \
    >"$LXCRIG_CACHE/debootstrap.log" 2>&1; then
    tail -n 20 "$LXCRIG_CACHE/debootstrap.log" >&2
    rm -rf "$build"
    lxcrig_die "debootstrap failed (log: $LXCRIG_CACHE/debootstrap.log)"
    return 1
  fi
  lxcrig_log "debootstrap: $(lxcrig_since "$t0") s"
  lxcrig_rootfs_customize "$build" "$mirror"
  t1=$(lxcrig_now)
  tar --numeric-owner --xattrs --acls -C "$build" -cf - . | zstd -q -T0 -3 -o "$tarball.tmp.$$"
  mv -f "$tarball.tmp.$$" "$tarball"
  rm -rf "$build"
  # Older keys are of no use any more.
  find "$LXCRIG_CACHE" -maxdepth 1 -name "$LXCRIG_SUITE-rootfs-*.tar.zst" ! -path "$tarball" -delete
  lxcrig_log "tarball: $(lxcrig_since "$t1") s, $(du -h "$tarball" | cut -f1) at $tarball"
}

# setup.sh: packages, id ranges, rootfs (under a lock: parallel setups build once).
lxcrig_setup() {
  local t0
  lxcrig_need_root
  t0=$(lxcrig_now)
  lxcrig_install_packages
  lxcrig_ensure_subids
  [ -e /dev/net/tun ] || { lxcrig_die "/dev/net/tun is missing on the host"; return 1; }
  mkdir -p "$LXCRIG_CACHE"
  (
    flock 9
    lxcrig_build_rootfs
  ) 9>"$LXCRIG_CACHE/.lock"
  lxcrig_log "setup: $(lxcrig_since "$t0") s"
}

# ---- processes the rig starts (recorded by PID and start time, killed by process group) -------

# lxcrig_spawn TAG CMD...: runs CMD in the background in a new session (so it is its own process
# group), output to $LXCRIG_RUN/TAG.log, and records it in $LXCRIG_RUN/pids. Started from a
# subshell, where there is no job control even in an interactive shell: the child is then no
# process group leader, setsid needs no fork, and $! is CMD's PID.
lxcrig_spawn() {
  local tag=$1 pid start
  shift
  pid=$(
    setsid "$@" </dev/null >"$LXCRIG_RUN/$tag.log" 2>&1 &
    echo $!
  )
  start=$(lxcrig_starttime "$pid") || { lxcrig_die "$tag exited at once: $(cat "$LXCRIG_RUN/$tag.log")"; return 1; }
  echo "$pid $start $tag" >>"$LXCRIG_RUN/pids"
}

# The start time of live process PID (field 22 of /proc/PID/stat); fails for a dead or zombie one.
lxcrig_starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  case $1 in Z | X) return 1 ;; esac
  printf '%s\n' "${20}"
}

# Kills what $LXCRIG_RUN/pids lists, if it is still that process (same start time).
lxcrig_kill_recorded() {
  local pid start tag i
  [ -f "$LXCRIG_RUN/pids" ] || return 0
  while read -r pid start tag; do
    [ "$(lxcrig_starttime "$pid" 2>/dev/null)" = "$start" ] || continue
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in 1 2 3 4 5 6 7 8 9 10; do
      [ "$(lxcrig_starttime "$pid" 2>/dev/null)" = "$start" ] || break
      [ "$i" = 10 ] && kill -KILL -- "-$pid" 2>/dev/null
      sleep 0.1
    done
    : "$tag"
  done <"$LXCRIG_RUN/pids"
  rm -f "$LXCRIG_RUN/pids"
}

# ---- the lab's network namespaces -------------------------------------------------------------

# lxcrig_ns_port NS BRIDGE PORTNAME ADDR/LEN... : a namespace with eth0 on a bridge in the net ns.
lxcrig_ns_port() {
  local ns=$1 bridge=$2 port=$3 a
  shift 3
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "$port" netns "$LXCRIG_NS_NET" type veth peer name eth0 netns "$ns"
  ip -n "$LXCRIG_NS_NET" link set "$port" master "$bridge" up
  for a in "$@"; do ip -n "$ns" addr add "$a" dev eth0; done
  ip -n "$ns" link set eth0 up
}

lxcrig_net_up() {
  local i ns
  ip netns add "$LXCRIG_NS_NET"
  ip -n "$LXCRIG_NS_NET" link set lo up
  ip -n "$LXCRIG_NS_NET" link add br-lan type bridge
  ip -n "$LXCRIG_NS_NET" link add br-wan type bridge
  ip -n "$LXCRIG_NS_NET" addr add "$LXCRIG_ROUTER/24" dev br-lan
  ip -n "$LXCRIG_NS_NET" link set br-lan up
  ip -n "$LXCRIG_NS_NET" link set br-wan up
  # The router: between the management LAN and the DMZ, and back to the VPN subnet.
  ip netns exec "$LXCRIG_NS_NET" sysctl -qw net.ipv4.ip_forward=1
  ip netns add "$LXCRIG_NS_DMZ"
  ip link add dmz0 netns "$LXCRIG_NS_NET" type veth peer name eth0 netns "$LXCRIG_NS_DMZ"
  ip -n "$LXCRIG_NS_NET" addr add "$LXCRIG_DMZ_ROUTER/24" dev dmz0
  ip -n "$LXCRIG_NS_NET" link set dmz0 up
  ip -n "$LXCRIG_NS_DMZ" link set lo up
  ip -n "$LXCRIG_NS_DMZ" addr add "$LXCRIG_DMZ_HOST/24" dev eth0
  ip -n "$LXCRIG_NS_DMZ" link set eth0 up
  ip -n "$LXCRIG_NS_DMZ" route add default via "$LXCRIG_DMZ_ROUTER"
  ip -n "$LXCRIG_NS_NET" route add "$LXCRIG_VPN_SUBNET" via "$LXCRIG_CT_MGMT" dev br-lan

  lxcrig_ns_port "$LXCRIG_NS_CTL" br-lan lan-ctl "$LXCRIG_CONTROLLER/24"
  lxcrig_ns_port "$LXCRIG_NS_MGMT" br-lan lan-mgmt "${LXCRIG_MGMT_HOSTS[0]}/24" "${LXCRIG_MGMT_HOSTS[1]}/24"
  ip -n "$LXCRIG_NS_MGMT" route add default via "$LXCRIG_ROUTER"
  for ((i = 0; i < LXCRIG_CLIENTS; i++)); do
    ns=$(lxcrig_client_ns "$i")
    lxcrig_ns_port "$ns" br-wan "wan-c$i" "$(lxcrig_client_addr "$i")/24"
  done
}

# lxcrig_add_client NAME I: one more client namespace on the wan (after up).
lxcrig_add_client() {
  lxcrig_names "$1" || return 1
  lxcrig_ns_port "$(lxcrig_client_ns "$2")" br-wan "wan-c$2" "$(lxcrig_client_addr "$2")/24"
}

# The apt relay: 192.168.1.1:PORT in the lab -> UNIX socket -> the host's mirror. Only that one
# host and port are reachable; no forwarding or NAT on the host.
lxcrig_relay_up() {
  local mirror scheme host port
  mirror=$(lxcrig_host_mirror)
  read -r scheme host port < <(lxcrig_uri_parts "$mirror")
  : "$scheme"
  lxcrig_spawn relay-host socat "UNIX-LISTEN:$LXCRIG_RUN/apt.sock,fork,mode=600" "TCP:$host:$port"
  local i
  for i in $(seq 50); do
    [ -S "$LXCRIG_RUN/apt.sock" ] && break
    sleep 0.02
  done
  lxcrig_spawn relay-lab ip netns exec "$LXCRIG_NS_NET" socat \
    "TCP-LISTEN:$port,bind=$LXCRIG_ROUTER,reuseaddr,fork" "UNIX-CONNECT:$LXCRIG_RUN/apt.sock"
  LXCRIG_MIRROR_HOST=$host
}

# ---- the container ----------------------------------------------------------------------------

lxcrig_ctdir() { printf '%s/%s\n' "$LXCRIG_LXCPATH" "$LXCRIG_CT"; }

# Which cgroup keys apply here: "cgroup2" on a pure v2 host, else "cgroup" (v1 or hybrid: the
# controllers are v1 hierarchies, and LXC wants lxc.cgroup.* for them).
lxcrig_cgroup_prefix() {
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo cgroup2; else echo cgroup; fi
}

lxcrig_write_config() {
  local dir cg
  dir=$(lxcrig_ctdir)
  cg=$(lxcrig_cgroup_prefix)
  # dev0: the container root's own /dev/net/tun, with the host node's mode (as Proxmox does).
  mkdir -p "$dir/passthrough"
  rm -f "$dir/passthrough/tun"
  mknod -m "$(stat -c %a /dev/net/tun)" "$dir/passthrough/tun" c 10 200
  chown "$LXCRIG_MAP_BASE:$LXCRIG_MAP_BASE" "$dir/passthrough/tun"
  # Net hooks: LXC makes a veth per interface at every start; its host end goes to our bridge.
  local br
  for br in lan wan; do
    cat >"$dir/net-up-$br" <<EOF
#!/bin/sh
# LXC net up hook (lxc.hook.version 0): \$5 is the veth's host end.
set -e
ip link set dev "\$5" netns "$LXCRIG_NS_NET"
ip -n "$LXCRIG_NS_NET" link set dev "\$5" master br-$br up
EOF
    chmod 0755 "$dir/net-up-$br"
  done
  {
    cat <<EOF
# wgadm test rig: CT 90's settings (tests/lxc/README.md maps each to Proxmox's).
lxc.include = /usr/share/lxc/config/common.conf
lxc.include = /usr/share/lxc/config/userns.conf
lxc.arch = linux64
lxc.uts.name = $LXCRIG_CT
lxc.rootfs.path = dir:$dir/rootfs

# unprivileged: 1
lxc.idmap = u 0 $LXCRIG_MAP_BASE $LXCRIG_MAP_SIZE
lxc.idmap = g 0 $LXCRIG_MAP_BASE $LXCRIG_MAP_SIZE
# userns.conf empties common.conf's capability drops; a container loads no kernel modules (and
# with these gone systemd skips systemd-modules-load and the debugfs mount instead of failing).
lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio

# systemd as PID 1 on a pure cgroup2 tree, as on Proxmox 8/9. Without ":force" LXC leaves the
# cgroup mount to systemd (the container has a cgroup namespace), which mounts cgroup2 at
# /sys/fs/cgroup; with ":force" on a hybrid host like this one LXC would mount the v1+v2 hybrid
# layout, which systemd 257 only tolerates. The empty line drops common.conf's cgroup:mixed.
# features nesting=1 is what lets systemd mount inside under AppArmor (none on this host;
# unconfined where there is).
lxc.init.cmd = /sbin/init systemd.unified_cgroup_hierarchy=1
lxc.mount.auto =
lxc.mount.auto = proc:mixed sys:mixed cgroup:rw
lxc.apparmor.profile = unconfined
lxc.signal.halt = SIGRTMIN+3
lxc.autodev = 1

# dev0: /dev/net/tun (WireGuard's userspace fallback). Like Proxmox, a node of the container's
# root (the host's /dev/net/tun may be 0600 root, which the container's root cannot open).
lxc.$cg.devices.allow = c 10:200 rwm
lxc.mount.entry = $dir/passthrough/tun dev/net/tun none bind,create=file 0 0

# onboot: 1, startup: order=90
lxc.start.auto = 1
lxc.start.order = 90

# net0: the management LAN
lxc.net.0.type = veth
lxc.net.0.name = eth0
lxc.net.0.flags = up
lxc.net.0.hwaddr = 02:16:3e:01:00:5a
lxc.net.0.ipv4.address = $LXCRIG_CT_MGMT/24
lxc.net.0.ipv4.gateway = $LXCRIG_ROUTER
lxc.net.0.script.up = $dir/net-up-lan
# net1: the wan clients reach UDP 51820 on (stands in for the router's port forward)
lxc.net.1.type = veth
lxc.net.1.name = eth1
lxc.net.1.flags = up
lxc.net.1.hwaddr = 02:16:3e:02:00:01
lxc.net.1.ipv4.address = $LXCRIG_CT_WAN/24
lxc.net.1.script.up = $dir/net-up-wan
EOF
    echo
    echo "# cores: 1, memory: 1024"
    if [ -n "$LXCRIG_CPUS" ]; then
      if [ "$cg" = cgroup2 ] && ! grep -qw cpuset /sys/fs/cgroup/cgroup.controllers; then
        echo "lxc.cgroup2.cpu.max = 100000 100000"
      elif [ "$cg" = cgroup ] && [ ! -d /sys/fs/cgroup/cpuset ]; then
        echo "# no cpuset controller here: no CPU limit"
      else
        echo "lxc.$cg.cpuset.cpus = $LXCRIG_CPUS"
      fi
    fi
    if [ -n "$LXCRIG_MEMORY_MB" ]; then
      if [ "$cg" = cgroup2 ]; then
        echo "lxc.cgroup2.memory.max = $((LXCRIG_MEMORY_MB * 1024 * 1024))"
      elif [ -d /sys/fs/cgroup/memory ]; then
        echo "lxc.cgroup.memory.limit_in_bytes = $((LXCRIG_MEMORY_MB * 1024 * 1024))"
      else
        echo "# no memory controller here: no memory limit"
      fi
    fi
  } >"$dir/config"
}

# Writes FILE (relative to the rootfs) with stdin's content, owned by the container's root.
lxcrig_ct_write() {
  local path=$1 mode=$2 root
  root="$(lxcrig_ctdir)/rootfs"
  cat >"$root/$path"
  chown -h "$LXCRIG_MAP_BASE:$LXCRIG_MAP_BASE" "$root/$path"
  chmod "$mode" "$root/$path"
}

lxcrig_make_rootfs() {
  local dir tarball root
  dir=$(lxcrig_ctdir)
  tarball=$(lxcrig_rootfs_tarball)
  [ -s "$tarball" ] || { lxcrig_die "no cached rootfs at $tarball: run tests/lxc/setup.sh"; return 1; }
  mkdir -p "$dir/rootfs"
  chmod 0755 "$dir"
  root="$dir/rootfs"
  # On a tmpfs of the CT's disk size (8 GB, allocated as used): unpacking ~10,000 files and
  # removing them again takes seconds on a busy disk and nothing in memory.
  if [ -n "$LXCRIG_DISK" ]; then
    mount -t tmpfs -o "size=$LXCRIG_DISK,mode=0755" "$LXCRIG_CT" "$root"
  fi
  chown "$LXCRIG_MAP_BASE:$LXCRIG_MAP_BASE" "$root"
  # Unpacked as the container's root in a user namespace with the container's map: every file
  # comes out owned by its shifted id, setuid bits and all. /dev is LXC's (lxc.autodev): a user
  # namespace cannot make device nodes anyway.
  zstd -q -d -c "$tarball" |
    lxc-usernsexec -m "b:0:$LXCRIG_MAP_BASE:$LXCRIG_MAP_SIZE" -- \
      tar --numeric-owner --xattrs --acls --exclude='./dev/*' -xpf - -C "$root"

  # This container's own: host keys, root's authorized key, name, hosts, resolver.
  ssh-keygen -q -A -f "$root" >/dev/null
  chown "$LXCRIG_MAP_BASE:$LXCRIG_MAP_BASE" "$root"/etc/ssh/ssh_host_*
  mkdir -p "$root/root/.ssh"
  chown "$LXCRIG_MAP_BASE:$LXCRIG_MAP_BASE" "$root/root/.ssh"
  chmod 0700 "$root/root/.ssh"
  lxcrig_ct_write root/.ssh/authorized_keys 0600 <"$LXCRIG_RUN/id_ed25519.pub"
  echo "$LXCRIG_CT" | lxcrig_ct_write etc/hostname 0644
  lxcrig_ct_write etc/hosts 0644 <<EOF
127.0.0.1	localhost
127.0.1.1	$LXCRIG_CT
::1		localhost ip6-localhost ip6-loopback

# wgadm test rig: the apt relay to the host's Debian mirror (tests/lxc/README.md)
$LXCRIG_ROUTER	$LXCRIG_MIRROR_HOST
EOF
  # Nothing answers DNS in the lab: fail at once instead of waiting for timeouts.
  lxcrig_ct_write etc/resolv.conf 0644 <<EOF
nameserver $LXCRIG_ROUTER
options timeout:1 attempts:1
EOF
  # The host key, for a strict known_hosts on the controller.
  printf '%s %s\n' "$LXCRIG_CT_MGMT" "$(cut -d' ' -f1,2 "$root/etc/ssh/ssh_host_ed25519_key.pub")" \
    >"$LXCRIG_RUN/known_hosts"
}

lxcrig_state() { lxc-info -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -sH 2>/dev/null || echo ABSENT; }

# Polls until systemd in the container has finished booting (running or degraded) and sshd
# answers the controller with key auth. Sets LXCRIG_BOOT_STATE. Not for $(...): it returns 1
# on a timeout, which a caller's errexit must see.
lxcrig_wait_booted() {
  local deadline state=""
  deadline=$(($(date +%s) + LXCRIG_BOOT_TIMEOUT))
  while :; do
    state=$(lxc-attach -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -- systemctl is-system-running 2>/dev/null) || true
    case $state in
      running | degraded) break ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
      lxcrig_log "error: container did not boot in ${LXCRIG_BOOT_TIMEOUT}s (systemd: '${state:-no answer}')"
      lxc-attach -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -- systemctl list-jobs --no-pager >&2 || true
      return 1
    fi
    sleep 0.2
  done
  while ! ip netns exec "$LXCRIG_NS_CTL" ssh -F "$LXCRIG_RUN/ssh_config" -o ConnectTimeout=2 \
    "$LXCRIG_CT_MGMT" true 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      lxcrig_log "error: sshd did not answer on $LXCRIG_CT_MGMT:22 in ${LXCRIG_BOOT_TIMEOUT}s"
      return 1
    fi
    sleep 0.2
  done
  if [ "$state" = degraded ]; then
    lxcrig_log "systemd is degraded; failed units:"
    lxc-attach -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -- systemctl --failed --no-legend >&2 || true
  fi
  LXCRIG_BOOT_STATE=$state
}

lxcrig_write_env() {
  local i clients=() ssh_args
  for ((i = 0; i < LXCRIG_CLIENTS; i++)); do clients+=("$(lxcrig_client_ns "$i")"); done
  ssh_args="-o UserKnownHostsFile=$LXCRIG_RUN/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
  # Ansible's SSH multiplexing socket is named after user@host:port, the same for every rig
  # (all at 192.168.1.90): with the default ~/.ansible/cp, a second rig's Ansible would run
  # through the first rig's master connection, on the first rig's container. One dir per rig.
  mkdir -m 0700 "$LXCRIG_RUN/cp"
  cat >"$LXCRIG_RUN/ssh_config" <<EOF
Host $LXCRIG_CT $LXCRIG_CT_MGMT
  HostName $LXCRIG_CT_MGMT
  User root
  IdentityFile $LXCRIG_RUN/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $LXCRIG_RUN/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
  LogLevel ERROR
EOF
  cat >"$LXCRIG_RUN/inventory.ini" <<EOF
[wireguard]
$LXCRIG_CT ansible_host=$LXCRIG_CT_MGMT ansible_user=root ansible_python_interpreter=/usr/bin/python3 ansible_ssh_private_key_file=$LXCRIG_RUN/id_ed25519 ansible_control_path_dir=$LXCRIG_RUN/cp ansible_ssh_common_args='$ssh_args'
EOF
  cat >"$LXCRIG_RUN/env" <<EOF
# wgadm LXC test rig '$LXCRIG_NAME' (tests/lxc/README.md). Source this file.
export WGADM_LXC_NAME=$LXCRIG_NAME
export WGADM_LXC_CT=$LXCRIG_CT
export WGADM_LXC_LXCPATH=$LXCRIG_LXCPATH
export WGADM_LXC_RUN=$LXCRIG_RUN
export WGADM_LXC_ADDR=$LXCRIG_CT_MGMT
export WGADM_LXC_WAN_ADDR=$LXCRIG_CT_WAN
export WGADM_LXC_ENDPOINT=$LXCRIG_CT_WAN:51820
export WGADM_LXC_SSH_KEY=$LXCRIG_RUN/id_ed25519
export WGADM_LXC_KNOWN_HOSTS=$LXCRIG_RUN/known_hosts
export WGADM_LXC_SSH_CONFIG=$LXCRIG_RUN/ssh_config
export WGADM_LXC_INVENTORY=$LXCRIG_RUN/inventory.ini
export WGADM_LXC_SSH_COMMON_ARGS="$ssh_args"
# For any inventory: this rig's own SSH control sockets (see lib.sh, lxcrig_write_env).
export ANSIBLE_SSH_CONTROL_PATH_DIR=$LXCRIG_RUN/cp
export WGADM_LXC_NS_NET=$LXCRIG_NS_NET
export WGADM_LXC_NS_CONTROLLER=$LXCRIG_NS_CTL
export WGADM_LXC_NS_MGMT=$LXCRIG_NS_MGMT
export WGADM_LXC_NS_DMZ=$LXCRIG_NS_DMZ
export WGADM_LXC_NS_CLIENTS="${clients[*]}"
export WGADM_LXC_CLIENT_ADDRS="$(for ((i = 0; i < LXCRIG_CLIENTS; i++)); do printf '%s ' "$(lxcrig_client_addr "$i")"; done | sed 's/ $//')"
export WGADM_LXC_CONTROLLER_ADDR=$LXCRIG_CONTROLLER
export WGADM_LXC_ROUTER=$LXCRIG_ROUTER
export WGADM_LXC_MGMT_HOSTS="${LXCRIG_MGMT_HOSTS[*]}"
export WGADM_LXC_DMZ_HOST=$LXCRIG_DMZ_HOST
EOF
}

# up.sh NAME: the lab, the container, booted, reachable. Prints timings; writes $RUN/env.
lxcrig_up() {
  local t0 t1
  lxcrig_need_root
  lxcrig_names "$1" || return 1
  t0=$(lxcrig_now)
  if [ -e "$LXCRIG_RUN" ] || [ -e "$(lxcrig_ctdir)" ] || ip netns list | grep -q "^$LXCRIG_NS_PREFIX"; then
    lxcrig_log "leftovers of an earlier rig '$LXCRIG_NAME': removing them first"
    lxcrig_down "$LXCRIG_NAME"
  fi
  [ -s "$(lxcrig_rootfs_tarball)" ] || lxcrig_setup
  mkdir -p "$LXCRIG_RUNBASE"
  mkdir -m 0700 "$LXCRIG_RUN"
  # The owner: whoever asked for the rig (up.sh's parent, or WGADM_LXC_OWNER); `down.sh --stale`
  # removes rigs whose owner is gone (a killed test run).
  local owner=${WGADM_LXC_OWNER:-$PPID}
  echo "$owner $(lxcrig_starttime "$owner" || echo 0)" >"$LXCRIG_RUN/owner"
  ssh-keygen -q -t ed25519 -N '' -C "wgadm-lxc-$LXCRIG_NAME" -f "$LXCRIG_RUN/id_ed25519"

  local tn tr tf
  tn=$(lxcrig_now)
  lxcrig_net_up
  tr=$(lxcrig_now)
  lxcrig_relay_up
  tf=$(lxcrig_now)
  lxcrig_make_rootfs
  lxcrig_write_config
  lxcrig_write_env
  lxcrig_log "prepared in $(lxcrig_since "$t0") s (namespaces $(lxcrig_between "$tn" "$tr") s," \
    "relay $(lxcrig_between "$tr" "$tf") s, rootfs $(lxcrig_since "$tf") s)"

  t1=$(lxcrig_now)
  lxc-start -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -d -l INFO -o "$LXCRIG_RUN/lxc.log" ||
    { lxcrig_die "lxc-start failed: $(tail -n 20 "$LXCRIG_RUN/lxc.log")"; return 1; }
  lxcrig_wait_booted
  lxcrig_log "booted ($LXCRIG_BOOT_STATE) in $(lxcrig_since "$t1") s; up in $(lxcrig_since "$t0") s"
  lxcrig_log "source $LXCRIG_RUN/env"
}

# restart.sh NAME: a clean stop and a start, standing in for a host reboot with onboot.
lxcrig_restart() {
  local t0 t1
  lxcrig_names "$1" || return 1
  t0=$(lxcrig_now)
  lxc-stop -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -t "${WGADM_LXC_STOP_TIMEOUT:-30}"
  t1=$(lxcrig_now)
  lxc-start -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -d -l INFO -o "$LXCRIG_RUN/lxc.log"
  lxcrig_wait_booted
  lxcrig_log "restart: stopped in $(lxcrig_between "$t0" "$t1") s, booted ($LXCRIG_BOOT_STATE) in $(lxcrig_since "$t1") s"
}

# exec.sh NAME CMD...: runs CMD in the container (lxc-attach, a clean environment).
lxcrig_exec() {
  lxcrig_names "$1" || return 1
  shift
  lxc-attach -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" --clear-env \
    --set-var PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin -- "$@"
}

# lxcrig_ssh NAME CMD...: ssh root@container from the controller namespace (key, known_hosts).
lxcrig_ssh() {
  lxcrig_names "$1" || return 1
  shift
  ip netns exec "$LXCRIG_NS_CTL" ssh -F "$LXCRIG_RUN/ssh_config" "$LXCRIG_CT_MGMT" "$@"
}

# What a rig NAME leaves on the machine (empty when nothing).
lxcrig_footprint() {
  local pid start tag
  lxcrig_names "$1" || return 1
  ip netns list 2>/dev/null | awk '{print $1}' | grep "^$LXCRIG_NS_PREFIX" | sed 's/^/netns /' || true
  lxc-ls -P "$LXCRIG_LXCPATH" -1 2>/dev/null | grep -x "$LXCRIG_CT" | sed 's/^/container /' || true
  lxcrig_rootfs_mounts | sed 's/^/mount /'
  [ -e "$(lxcrig_ctdir)" ] && echo "dir $(lxcrig_ctdir)"
  [ -e "$LXCRIG_RUN" ] && echo "dir $LXCRIG_RUN"
  if [ -f "$LXCRIG_RUN/pids" ]; then
    while read -r pid start tag; do
      [ "$(lxcrig_starttime "$pid" 2>/dev/null)" = "$start" ] && echo "process $pid ($tag)"
    done <"$LXCRIG_RUN/pids"
  fi
  # Any process still inside one of the rig's namespaces (e.g. started by a test).
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$LXCRIG_NS_PREFIX"); do
    ip netns pids "$ns" 2>/dev/null | sed "s/^/process in $ns: /"
  done
  return 0
}

lxcrig_rootfs_mounts() {
  awk -v d="$(lxcrig_ctdir)/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts
}

lxcrig_umount_rootfs() {
  local m
  for m in $(lxcrig_rootfs_mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
}

# down.sh NAME: everything of rig NAME, whatever state it is in. Safe to call twice.
lxcrig_down() {
  local ns pid
  lxcrig_need_root
  lxcrig_names "$1" || return 1
  if [ -e "$(lxcrig_ctdir)/config" ]; then
    if [ "$(lxcrig_state)" != STOPPED ]; then
      lxc-stop -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -k 2>/dev/null || true
    fi
  fi
  lxcrig_umount_rootfs
  if [ -e "$(lxcrig_ctdir)/config" ]; then
    lxc-destroy -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" >/dev/null 2>&1 || true
  fi
  rm -rf "$(lxcrig_ctdir)"
  [ -d "$LXCRIG_RUN" ] && lxcrig_kill_recorded
  # Processes tests left in the rig's namespaces (found by namespace, killed by PID): TERM first,
  # so that e.g. wireguard-go removes its socket, then KILL.
  local nss pids i
  nss=$(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$LXCRIG_NS_PREFIX" || true)
  for i in 1 2 3 4 5 6 7 8 9 10 11; do
    pids=$(for ns in $nss; do ip netns pids "$ns" 2>/dev/null; done)
    [ -n "$pids" ] || break
    for pid in $pids; do
      if [ "$i" -lt 11 ]; then kill -TERM "$pid" 2>/dev/null || true; else kill -KILL "$pid" 2>/dev/null || true; fi
    done
    sleep 0.1
  done
  for ns in $nss; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$LXCRIG_RUN"
  return 0
}

# Every rig on the machine, by name (from temp dirs, containers and namespaces).
lxcrig_list() {
  {
    find "$LXCRIG_RUNBASE" -maxdepth 1 -name 'wgadm-lxc-*' -type d -printf '%f\n' 2>/dev/null |
      sed 's/^wgadm-lxc-//'
    lxc-ls -P "$LXCRIG_LXCPATH" -1 2>/dev/null | grep '^wgadm-lxc-' | sed 's/^wgadm-lxc-//'
    ip netns list 2>/dev/null | awk '{print $1}' | grep '^wgadm-lxc-.*-net$' |
      sed 's/^wgadm-lxc-//; s/-net$//'
  } | sort -u
}

# Whether rig NAME's owner still runs (a rig without an owner file younger than a minute is one
# being made right now).
lxcrig_owner_alive() {
  local pid start
  lxcrig_names "$1" || return 1
  if [ ! -f "$LXCRIG_RUN/owner" ]; then
    [ -d "$LXCRIG_RUN" ] && [ -n "$(find "$LXCRIG_RUN" -maxdepth 0 -mmin -1)" ]
    return
  fi
  read -r pid start <"$LXCRIG_RUN/owner" || true
  [ -n "${start:-}" ] && [ "$(lxcrig_starttime "$pid" 2>/dev/null)" = "$start" ]
}

# down.sh --stale: removes the rigs whose owner is gone (killed test runs). Prints their names.
lxcrig_down_stale() {
  local n
  for n in $(lxcrig_list); do
    lxcrig_owner_alive "$n" && continue
    lxcrig_log "removing stale rig '$n'"
    lxcrig_down "$n"
  done
}

# lxcrig_check WHAT CMD...: runs CMD (with -e, in a subshell), counts it in the caller's `passed`
# or `failed` and prints "ok   WHAT" or "FAIL WHAT" with the last 20 lines of its output (kept in
# the caller's `out_file`). Shared by smoke.sh and failclosed.sh.
lxcrig_check() {
  local what=$1 rc
  shift
  set +e
  (
    set -e
    "$@"
  ) >"$out_file" 2>&1
  rc=$?
  set -e
  if [ "$rc" = 0 ]; then
    passed=$((passed + 1))
    printf 'ok   %s\n' "$what"
  else
    failed=$((failed + 1))
    printf 'FAIL %s\n' "$what"
    tail -n 20 "$out_file" | sed 's/^/     | /'
  fi
}
