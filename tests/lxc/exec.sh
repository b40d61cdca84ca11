#!/usr/bin/env bash
# Runs a command inside rig NAME's container (lxc-attach, as root, clean environment).
# Usage: exec.sh NAME CMD [ARG...]   e.g. exec.sh t1 systemctl is-active wg-quick@wg0
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
[ $# -ge 2 ] || { echo "usage: $0 NAME CMD [ARG...]" >&2; exit 2; }
lxcrig_exec "$@"
