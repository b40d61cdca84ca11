# shellcheck shell=bash
# Part of the LXC test rig (sourced by ../lib.sh, which holds the settings, names and small
# helpers): the packages and the cached Debian 13 rootfs (setup.sh).

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
