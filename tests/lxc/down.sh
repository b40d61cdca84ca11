#!/usr/bin/env bash
# Removes rig NAME: the container, its namespaces, the processes the rig started, its temp dir.
# Safe to call twice, and after a failure halfway. Usage: down.sh NAME
# down.sh --stale removes every rig whose owner (the process that ran up.sh) is gone.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$here/lib.sh"
[ $# = 1 ] || { echo "usage: $0 NAME | --stale" >&2; exit 2; }
if [ "$1" = --stale ]; then
  lxcrig_down_stale
  exit 0
fi
lxcrig_down "$1"
left=$(lxcrig_footprint "$1")
if [ -n "$left" ]; then
  printf 'lxc-rig: left behind:\n%s\n' "$left" >&2
  exit 1
fi
