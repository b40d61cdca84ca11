#!/usr/bin/env bash
# Runs a command in rig NAME's container over SSH from the controller namespace, as Ansible
# does (root, the rig's key, strict known_hosts). Usage: ssh.sh NAME [CMD [ARG...]]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
[ $# -ge 1 ] || { echo "usage: $0 NAME [CMD [ARG...]]" >&2; exit 2; }
lxcrig_ssh "$@"
