#!/usr/bin/env bash
# The VM image's LXC container (CT 190, as the collection names CT 90 on Proxmox), prepared when
# image.sh builds the image, so that a run only writes its config and starts it:
#
#   ct-rootfs.sh key            prints what goes into the container (for image.sh's cache key)
#   ct-rootfs.sh build ROOT DEBS
#       ROOT  the VM's root tree (debootstrapped, with lxc and uidmap)
#       DEBS  image.sh's debootstrap cache, holding the VM's own wireguard-tools and nftables
#
# The container's rootfs is tests/lxc's cached Debian 13 rootfs (the one the LXC rig and the
# Proxmox stand-in boot), unpacked to ROOT/var/lib/lxc/190/rootfs, with wireguard-tools and
# nftables installed from DEBS (the VM has no network, so nothing can come from apt there; the
# role installs the same two packages from the mirror), and every file shifted to the
# unprivileged id map Proxmox uses, 0 -> 100000 (65536 ids), as `pct create` does. The rig's
# rootfs has no file capabilities or other xattrs (checked when this was written), so a plain
# chown per file (setuid bits restored after it) is the whole shift.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
map_base=100000
map_size=65536
ct=190
# What the container gets on top of the rig's rootfs: what `wgadm apply` runs (wg-quick, nft)
# and the libraries nftables needs that the rootfs lacks.
ct_debs=(libjansson4 libnftnl11 libnftables1 nftables wireguard-tools)

log() { echo "vm image: container: $*" >&2; }

# The rig's cached rootfs tarball (its name carries the hash of its own recipe).
rig_tarball() { (
  # shellcheck source=../lxc/lib.sh
  . "$repo/tests/lxc/lib.sh"
  lxcrig_rootfs_tarball
); }

# The .deb in $debs of package $1 at the version installed in the VM's root $root.
deb_of() {
  local pkg=$1 version f
  version=$(chroot "$root" dpkg-query -W -f '${Version}' "$pkg") ||
    { log "the VM image has no $pkg (image.sh's package list)"; return 1; }
  for f in "$debs/${pkg}_"*.deb; do
    [ -e "$f" ] || continue
    if [ "$(dpkg-deb -f "$f" Version)" = "$version" ]; then
      echo "$f"
      return 0
    fi
  done
  log "no $pkg $version in $debs"
  return 1
}

case ${1:-} in
  key)
    printf '%s\n' "$(basename "$(rig_tarball)")" "$map_base" "$map_size" "${ct_debs[@]}"
    cat "$here/ct-rootfs.sh"
    ;;
  build)
    root=$2
    debs=$3
    t0=$(date +%s)
    tarball=$(rig_tarball)
    # The rig's setup builds the tarball when it is missing (cached after that) and does nothing
    # else the image needs; it also installs lxc, uidmap and zstd on this machine.
    [ -s "$tarball" ] || bash "$repo/tests/lxc/setup.sh" >&2
    ctroot="$root/var/lib/lxc/$ct/rootfs"
    mkdir -p "$ctroot"
    chmod 0755 "$root/var/lib/lxc/$ct"
    zstd -q -d -c "$tarball" | tar --numeric-owner -xpf - -C "$ctroot" --exclude='./dev/*'
    pkgs=()
    for p in "${ct_debs[@]}"; do pkgs+=("$(deb_of "$p")"); done
    mkdir -p "$ctroot/tmp/debs"
    cp "${pkgs[@]}" "$ctroot/tmp/debs/"
    chroot "$ctroot" sh -c 'dpkg -i /tmp/debs/*.deb' >"$root/var/lib/lxc/$ct/dpkg.log" 2>&1 || {
      cat "$root/var/lib/lxc/$ct/dpkg.log" >&2
      log "dpkg -i in the container's rootfs failed"
      exit 1
    }
    rm -rf "$ctroot/tmp/debs" "$ctroot"/var/cache/apt/archives/*.deb
    # Nobody logs in over SSH (lxc-attach is the way in) and it has no host keys: masked, so the
    # container's systemd reaches `running`. nftables.service would flush the ruleset at boot
    # (wgadm-firewall.service loads wgadm's table).
    ln -sf /dev/null "$ctroot/etc/systemd/system/ssh.service"
    ln -sf /dev/null "$ctroot/etc/systemd/system/nftables.service"
    : >"$ctroot/etc/machine-id"
    # The shift: every file owned by its id + 100000 (chown drops setuid and setgid bits: the
    # mode is set again after it).
    python3 - "$ctroot" "$map_base" "$map_size" <<'PY'
import os, stat, sys
top, base, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seen = set()
def shift(path):
    st = os.lstat(path)
    # A hard link is one inode: shifted once.
    if (st.st_dev, st.st_ino) in seen:
        return
    seen.add((st.st_dev, st.st_ino))
    if st.st_uid >= size or st.st_gid >= size:
        sys.exit(f"{path}: owner {st.st_uid}:{st.st_gid} is outside the map of {size} ids")
    os.chown(path, base + st.st_uid, base + st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode))
shift(top)
for d, dirs, files in os.walk(top):
    for n in dirs + files:
        shift(os.path.join(d, n))
PY
    # The VM's root may map these ids (newuidmap checks /etc/subuid also for root).
    echo "root:$map_base:$map_size" >>"$root/etc/subuid"
    echo "root:$map_base:$map_size" >>"$root/etc/subgid"
    # lxc-net wants dnsmasq for lxcbr0 and lxc.service autostarts containers: neither is needed
    # (the test writes the container's config and starts it). apparmor.service would parse
    # every profile in /etc/apparmor.d at boot under emulation; lxc-start loads the one
    # profile it generates for the container itself.
    for unit in lxc-net.service lxc.service lxc-monitord.service apparmor.service; do
      ln -sf /dev/null "$root/etc/systemd/system/$unit"
    done
    log "CT $ct's rootfs (ids shifted to $map_base) in $(($(date +%s) - t0)) s, $(du -sh "$ctroot" | cut -f1)"
    ;;
  *)
    echo "usage: ct-rootfs.sh key | build ROOT DEBS" >&2
    exit 2
    ;;
esac
