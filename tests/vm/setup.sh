#!/usr/bin/env bash
# Installs what the VM lab needs on the host: qemu (TCG is enough; KVM is used where it can run
# a stock kernel) and debootstrap. Idempotent: a second run installs nothing.
#
# qemu-system-x86 must come from the same release as an installed qemu-utils: on a bookworm host
# whose qemu-utils came from bookworm-backports, mixing them breaks (shared qemu-block modules),
# so qemu-system-x86 then comes from bookworm-backports too (the source is added if missing).
set -euo pipefail

apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
for p in debootstrap e2fsprogs zstd; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "vm setup: installing ${missing[*]}" >&2
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
  target=()
  utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  . /etc/os-release
  if [[ $utils == *bpo* ]]; then
    suite="${VERSION_CODENAME}-backports"
    if ! grep -rqs "$suite" /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "vm setup: qemu-utils $utils is from $suite: adding that source" >&2
      cat >"/etc/apt/sources.list.d/$suite.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    target=(-t "$suite")
  fi
  echo "vm setup: installing qemu-system-x86 ${target[*]}" >&2
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends "${target[@]}" qemu-system-x86 >/dev/null
fi
