#!/usr/bin/env bash
# Restarts rig NAME's container (a clean lxc-stop, then lxc-start), standing in for a host
# reboot with onboot; returns when systemd has booted and sshd answers. Usage: restart.sh NAME
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
[ $# = 1 ] || { echo "usage: $0 NAME" >&2; exit 2; }
lxcrig_restart "$1"
