#!/usr/bin/env bash
# Brings rig NAME up: the lab's network namespaces, the apt relay, an unprivileged Debian 13
# container booted with systemd, reachable over SSH from the controller namespace.
# Usage: up.sh NAME   then: source /tmp/wgadm-lxc-NAME/env   (README.md lists the variables)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
[ $# = 1 ] || { echo "usage: $0 NAME" >&2; exit 2; }
# A failed up removes what it made (WGADM_LXC_KEEP=1 keeps it for a look; down.sh removes it).
name=$1
lxcrig_names "$name"
ok=0
trap '[ "$ok" = 1 ] || [ "${WGADM_LXC_KEEP:-}" = 1 ] || lxcrig_down "$name"' EXIT
lxcrig_up "$name"
ok=1
