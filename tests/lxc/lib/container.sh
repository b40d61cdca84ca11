# shellcheck shell=bash
# Part of the LXC test rig (sourced by ../lib.sh, which holds the settings, names and small
# helpers): the container: its LXC config and rootfs, boot, the environment file, up, restart, exec, ssh.

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
