#!/usr/bin/env bash
# Installs everything wgadm's demo and tests need on a fresh Debian machine.
# Idempotent: a second run installs nothing and takes seconds.
set -euo pipefail

apt_packages=(wireguard-tools wireguard-go nftables iproute2 iputils-ping iperf3 zbar-tools procps faketime libsqlite3-dev pkg-config strace)
# The `ansible` bundle brings ansible-core and the community.proxmox collection the Proxmox
# role uses; ansible-lint checks the collection.
# proxmoxer: community.proxmox runs on the controller in tests/pve (on a PVE host the role
# installs python3-proxmoxer from Debian).
pip_packages=(ansible==12.3.0 ansible-lint==26.10.1 proxmoxer==2.3.0)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "setup: installing cargo-deb" >&2
  cargo install --quiet --locked cargo-deb
fi

if ! python3 -m pip show ansible ansible-lint proxmoxer >/dev/null 2>&1; then
  echo "setup: installing ${pip_packages[*]}" >&2
  python3 -m pip install --quiet --disable-pip-version-check "${pip_packages[@]}"
fi

# The VM lab (tests/vm, `make test-vm`): qemu and debootstrap.
bash "$(dirname "$0")/../tests/vm/setup.sh"
