# shellcheck shell=bash
# Zabbix 7.0 from Debian 13's packages, for tests/zabbix/test.sh --zabbix7. Sourced; needs env.sh
# and tests/lxc/lib.sh sourced first.
#
# The rootfs: the LXC rig's cached Debian 13 (trixie) rootfs (tests/lxc, the one CT 90's stand-in
# boots) plus zabbix-server-pgsql, zabbix-frontend-php, PHP, PostgreSQL and zabbix-agent2 from the
# host's Debian mirror, installed with apt in a chroot, and a PostgreSQL cluster with the Zabbix
# 7.0 schema loaded. Cached as one tarball under /var/cache/wgadm-test/zabbix7, keyed on the base
# rootfs, the package list and this recipe; the .debs are kept for rebuilds.
#
# At test time it is unpacked once (a tmpfs) and runs as two LXC containers:
#   - "zbx": PostgreSQL, zabbix_server and the frontend (`php -S`), its own PID and mount
#     namespaces, the management network namespace of the test (lxc.namespace.keep = net);
#   - "agent": zabbix_agent2 as user zabbix, in the WireGuard server's network namespace and the
#     wgadm daemon's PID namespace (lxc.namespace.share.pid), as the agent in CT 90 shares them
#     with wgadm (its UDP port check and its daemon process check need both).
# Both are privileged containers (no id map): the agent's joins a PID namespace of the host's
# user namespace, and a /proc of it cannot be mounted from another user namespace. Neither is
# CT 90.
ZBX7_CACHE=${WGADM_ZBX7_CACHE:-/var/cache/wgadm-test/zabbix7}
ZBX7_PACKAGES=(zabbix-server-pgsql zabbix-frontend-php zabbix-agent2 postgresql php-cli php-cgi php-pgsql)
# Bump when zbx7_build changes, so the cache key changes.
ZBX7_RECIPE=1
# Inside the rootfs: the prepared database cluster.
ZBX7_PGDATA=/var/lib/wgadm-zabbix/pgdata

zbx7_log() { printf 'zabbix7: %s\n' "$*" >&2; }

zbx7_key() {
  { basename "$(lxcrig_rootfs_tarball)"; printf '%s\n' "${ZBX7_PACKAGES[@]}" "$ZBX7_RECIPE" "$ZBX_DB_PASSWORD"; } |
    sha256sum | cut -c1-12
}
zbx7_tarball() { printf '%s/trixie-zabbix7-%s.tar.zst\n' "$ZBX7_CACHE" "$(zbx7_key)"; }

# Builds the rootfs tarball unless cached (under a lock: parallel runs build once).
zbx7_setup() {
  lxcrig_setup
  mkdir -p "$ZBX7_CACHE/debs"
  (
    flock 9
    zbx7_build
  ) 9>"$ZBX7_CACHE/.lock"
}

zbx7_build() {
  local tarball build t0
  tarball=$(zbx7_tarball)
  if [ -s "$tarball" ]; then
    zbx7_log "rootfs cached: $tarball"
    return 0
  fi
  t0=$(lxcrig_now)
  build="$ZBX7_CACHE/build.$$"
  rm -rf "$build"
  mkdir -p "$build"
  zstd -q -d -c "$(lxcrig_rootfs_tarball)" | tar --numeric-owner -xpf - -C "$build"
  # The mounts (proc, /dev, the .deb cache) live in a mount namespace of their own: they are gone
  # when it ends, also when the build fails half-way, and never show on the host.
  if ! unshare --mount --propagation private -- bash "$(dirname "${BASH_SOURCE[0]}")/ct7-build.sh" \
    "$build" "$ZBX7_CACHE/debs" "$ZBX7_PGDATA" "$ZBX_DB_PASSWORD" "${ZBX7_PACKAGES[@]}" \
    >"$ZBX7_CACHE/build.log" 2>&1; then
    tail -n 30 "$ZBX7_CACHE/build.log" >&2
    rm -rf "$build"
    zbx7_log "error: building the Zabbix 7.0 rootfs failed (log: $ZBX7_CACHE/build.log)"
    return 1
  fi
  : >"$build/etc/resolv.conf"
  rm -f "$build"/var/lib/apt/lists/*_Packages "$build"/var/cache/apt/*.bin
  chroot "$build" dpkg-query -W -f='${Package} ${Version}\n' "${ZBX7_PACKAGES[@]}" >"$build/.wgadm-zabbix7-packages"
  tar --numeric-owner --xattrs --acls -C "$build" -cf - . | zstd -q -T0 -3 -o "$tarball.tmp.$$"
  mv -f "$tarball.tmp.$$" "$tarball"
  rm -rf "$build"
  find "$ZBX7_CACHE" -maxdepth 1 -name 'trixie-zabbix7-*.tar.zst' ! -path "$tarball" -delete
  zbx7_log "built in $(lxcrig_since "$t0") s: $(du -h "$tarball" | cut -f1) at $tarball"
}

# ---- at test time ------------------------------------------------------------------------------

# zbx7_unpack DIR: the cached rootfs into DIR, on a tmpfs (unpacking and removing ~25,000 files
# on a busy disk takes seconds; in memory it does not). Sets ZBX7_ROOT.
zbx7_unpack() {
  local tarball
  tarball=$(zbx7_tarball)
  [ -s "$tarball" ] || { zbx7_log "error: no cached rootfs at $tarball: run tests/zabbix/setup.sh --zabbix7"; return 1; }
  ZBX7_ROOT=$1
  mkdir -p "$ZBX7_ROOT"
  mount -t tmpfs -o size=4G,mode=0755 wgadm-zabbix7 "$ZBX7_ROOT"
  zstd -q -d -c "$tarball" | tar --numeric-owner --xattrs --acls --exclude='./dev/*' -xpf - -C "$ZBX7_ROOT"
}

# The uid and gid of USER in the rootfs.
zbx7_uid() { chroot "$ZBX7_ROOT" id -u "$1"; }
zbx7_gid() { chroot "$ZBX7_ROOT" id -g "$1"; }
# Where the rootfs's PostgreSQL programs are (initdb, pg_isready).
zbx7_pgbin() { cat "$ZBX7_ROOT/.wgadm-zabbix7-pgbin"; }

# zbx7_ct_start NAME LXCPATH NETNS PID INIT-CMD BIND-DIR...: a privileged LXC container on the
# unpacked rootfs, in network namespace NETNS, in the PID namespace of process PID (empty: one of
# its own), with each BIND-DIR at the same path inside, running INIT-CMD as its init. Recorded for zbx7_cleanup. The lxc-* tools reach a container's
# monitor through an abstract UNIX socket, which belongs to a network namespace: every lxc-*
# command for the container runs in NETNS too (lxc-info elsewhere says STOPPED).
zbx7_ct_start() {
  local name=$1 lxcpath=$2 netns=$3 pidns=$4 init=$5 d
  shift 5
  mkdir -p "$lxcpath/$name"
  {
    cat <<CONF
# wgadm tests/zabbix (ct7.sh): Debian 13's Zabbix 7.0 in the test's network namespace $netns
lxc.uts.name = $name
lxc.rootfs.path = dir:$ZBX7_ROOT
# "user" too: with a keep list LXC unshares every namespace not on it, the user namespace
# included, and a user namespace without an id map cannot even make /dev/pts.
lxc.namespace.keep = user net
CONF
    [ -z "$pidns" ] || echo "lxc.namespace.share.pid = $pidns"
    cat <<CONF
lxc.mount.auto = proc:rw sys:ro
lxc.autodev = 1
lxc.mount.entry = tmpfs dev/shm tmpfs rw,nosuid,nodev,create=dir 0 0
lxc.apparmor.profile = unconfined
lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio
lxc.environment = PATH=/usr/sbin:/usr/bin:/sbin:/bin
lxc.init.cmd = $init
CONF
    for d in "$@"; do echo "lxc.mount.entry = $d ${d#/} none bind,create=dir 0 0"; done
  } >"$lxcpath/$name/config"
  ip netns exec "$netns" lxc-start -P "$lxcpath" -n "$name" -d -l INFO -o "$lxcpath/$name.log" ||
    { zbx7_log "error: lxc-start $name failed: $(tail -n 20 "$lxcpath/$name.log")"; return 1; }
  # Its init's PID and start time too: if lxc-stop cannot reach it, cleanup kills that PID (the
  # init of a PID namespace takes every process in it along).
  local pid
  pid=$(zbx7_ct_pid "$name" "$lxcpath" "$netns")
  ZBX7_CONTAINERS+=("$name $lxcpath $netns $pid $(lxcrig_starttime "$pid")")
}
ZBX7_CONTAINERS=()

# zbx7_ct_exec NAME LXCPATH NETNS CMD...: runs CMD in the container (its namespaces, a clean
# environment).
zbx7_ct_exec() {
  local name=$1 lxcpath=$2 netns=$3
  shift 3
  ip netns exec "$netns" lxc-attach -P "$lxcpath" -n "$name" --clear-env \
    --set-var PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin -- "$@"
}

# zbx7_ct_pid NAME LXCPATH NETNS: the PID of a running container's init (for the agent's
# container: zabbix_agent2 itself).
zbx7_ct_pid() { ip netns exec "$3" lxc-info -P "$2" -n "$1" -pH; }

# Stops every container zbx7_ct_start made (newest first) and unmounts the rootfs. Safe twice;
# call it before the network namespaces go (see zbx7_ct_start).
zbx7_cleanup() {
  local i name lxcpath netns pid start
  for ((i = ${#ZBX7_CONTAINERS[@]} - 1; i >= 0; i--)); do
    read -r name lxcpath netns pid start <<<"${ZBX7_CONTAINERS[$i]}"
    if [ "$(ip netns exec "$netns" lxc-info -P "$lxcpath" -n "$name" -sH 2>/dev/null)" != STOPPED ]; then
      ip netns exec "$netns" lxc-stop -P "$lxcpath" -n "$name" -k 2>/dev/null || true
    fi
    if [ -n "$start" ] && [ "$(lxcrig_starttime "$pid" 2>/dev/null)" = "$start" ]; then
      zbx7_log "container $name did not stop; killing its init, PID $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  ZBX7_CONTAINERS=()
  if [ -n "${ZBX7_ROOT:-}" ] && mountpoint -q "$ZBX7_ROOT"; then
    umount "$ZBX7_ROOT" 2>/dev/null || umount -l "$ZBX7_ROOT"
  fi
}
