#!/usr/bin/env bash
# Installs what the LXC test rig needs (lxc, debootstrap, uidmap, openssh-client, socat, zstd),
# lets root map the container's ids, and builds the cached Debian 13 rootfs unless it is there.
# Idempotent: with everything in place it takes about a second. Usage: setup.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
lxcrig_setup
