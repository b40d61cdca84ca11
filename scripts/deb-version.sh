#!/usr/bin/env bash
# The .deb version of this build: the crate's version, the build time (UTC) and the commit, e.g.
# 0.1.0+20261201032500.gd0dceb7 (with ".dirty" for uncommitted changes). Every build differs and
# a later build sorts higher for dpkg, so `apt install ./wgadm.deb` (the Ansible role) upgrades
# a server to a rebuilt wgadm instead of keeping the installed 0.1.0.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/crates/wgadm/Cargo.toml" | head -1)
if [ -z "$version" ] || grep -q '^version.workspace' "$repo/crates/wgadm/Cargo.toml"; then
  version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
fi
[ -n "$version" ] || { echo "deb-version: no version in crates/wgadm/Cargo.toml or Cargo.toml" >&2; exit 1; }
commit=$(git -C "$repo" rev-parse --short=7 HEAD 2>/dev/null || echo unknown)
dirty=
git -C "$repo" diff --quiet HEAD 2>/dev/null || dirty=.dirty
printf '%s+%s.g%s%s\n' "$version" "$(date -u +%Y%m%d%H%M%S)" "$commit" "$dirty"
