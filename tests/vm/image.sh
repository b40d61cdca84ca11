#!/usr/bin/env bash
# Builds the VM lab's Debian 13 image unless the cache has it, and prints its directory:
#   $WGADM_VM_CACHE/<key>/{root.img,vmlinuz,initrd.img}
# <key> hashes everything that goes into it (this script, the guest files, the package list,
# the suite and the mirror), so a change to any of them builds a new image and an unchanged
# recipe reuses the old one. root.img is attached with snapshot=on: it is never modified.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${WGADM_VM_CACHE:-/var/cache/wgadm-test/vm}
suite=trixie
# What the tests need in the VM: the kernel (with its WireGuard module), systemd as PID 1, the
# tools the lab and wgadm call, python3 for the lab's small TCP listeners. lxc, uidmap and
# apparmor run the server in an unprivileged container as on Proxmox (ct-rootfs.sh).
packages=linux-image-amd64,initramfs-tools,systemd-sysv,udev,kmod,procps,iproute2,wireguard-tools,nftables,iputils-ping,iperf3,python3,tar
packages=$packages,lxc,uidmap,apparmor

log() { echo "vm image: $*" >&2; }

# The Debian mirror the host's apt uses (as tests/lxc does), else deb.debian.org.
mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
  2>/dev/null | grep -v '^[[:space:]]*#' |
  grep -oE 'https?://[^[:space:]]+/debian/?([[:space:]]|$)' | head -n1 | tr -d '[:space:]') || true
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}

key=$( { printf '%s\n' "$suite" "$mirror" "$packages"; cat "$here/image.sh" "$here"/guest/*
  bash "$here/ct-rootfs.sh" key; } |
  sha256sum | cut -c1-12)
out="$cache/$key"
if [ -s "$out/root.img" ] && [ -e "$out/done" ]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi

mkdir -p "$cache/debs"
build="$cache/build-$key.$$"
cleanup() { rm -rf "$build"; }
trap cleanup EXIT
rm -rf "$build" "$out"
mkdir -p "$build"
root="$build/root"
t0=$(date +%s)
log "debootstrap $suite from $mirror (minbase + $packages), ~2 min"
if ! debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" \
  "$suite" "$root" "$mirror" >"$build/debootstrap.log" 2>&1; then
  tail -n 30 "$build/debootstrap.log" >&2
  cp "$build/debootstrap.log" "$cache/debootstrap-failed.log"
  log "debootstrap failed (log: $cache/debootstrap-failed.log)"
  exit 1
fi
log "debootstrap: $(($(date +%s) - t0)) s"

# Boot without questions: the root disk is the whole of /dev/vda, nobody logs in, nothing runs
# that the tests do not need, and the payload service runs the tests and powers off.
echo "/dev/vda / ext4 rw,relatime 0 1" >"$root/etc/fstab"
echo wgadm-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 wgadm-vm\n' >"$root/etc/hosts"
: >"$root/etc/machine-id"
rm -f "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
for unit in getty@tty1.service serial-getty@ttyS0.service console-getty.service \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer systemd-tmpfiles-clean.timer iperf3.service \
  nftables.service systemd-networkd.service systemd-resolved.service systemd-timesyncd.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
install -m 0755 "$here/guest/wgadm-vm-boot" "$root/usr/local/sbin/wgadm-vm-boot"
install -m 0644 "$here/guest/wgadm-vm.service" "$root/etc/systemd/system/wgadm-vm.service"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/wgadm-vm.service \
  "$root/etc/systemd/system/multi-user.target.wants/wgadm-vm.service"

# A small initramfs: only what mounts /dev/vda (Debian's default, MODULES=most, is ~37 MB, and
# unpacking it and probing all those modules under emulation took a large part of the boot).
printf 'MODULES=list\nCOMPRESS=zstd\n' >"$root/etc/initramfs-tools/conf.d/wgadm-vm.conf"
printf '%s\n' virtio_pci virtio_blk ext4 >>"$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k all >"$build/initramfs.log" 2>&1 ||
  { cat "$build/initramfs.log" >&2; log "update-initramfs failed"; exit 1; }

vmlinuz=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -n1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -n1)
[ -s "$vmlinuz" ] && [ -s "$initrd" ] || { log "no kernel or initrd in $root/boot"; exit 1; }
cp "$vmlinuz" "$build/vmlinuz"
cp "$initrd" "$build/initrd.img"
basename "$vmlinuz" >"$build/kernel-version"

bash "$here/ct-rootfs.sh" build "$root" "$cache/debs"

t1=$(date +%s)
mkfs.ext4 -q -F -L wgadm-vm -d "$root" "$build/root.img" 3G >/dev/null
log "mkfs.ext4 -d: $(($(date +%s) - t1)) s"
rm -rf "$root"
touch "$build/done"
mv "$build" "$out"
# Older images are of no use any more; the one before stays, for a run that still uses it.
ls -1dt "$cache"/*/done 2>/dev/null | tail -n +3 | while read -r old; do
  rm -rf "$(dirname "$old")"
done
log "built $out in $(($(date +%s) - t0)) s"
echo "$out"
