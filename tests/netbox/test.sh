#!/usr/bin/env bash
# wgadm against a real NetBox: sets it up (tests/netbox/setup.sh: installs, migrates or clones
# the cached database, starts PostgreSQL, Redis and NetBox on 127.0.0.1), runs the Rust tests
# in crates/wgadm/tests/netbox.rs, and stops what it started by PID, also when a test fails.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
CACHE=${WGADM_TEST_CACHE:-/var/cache/wgadm-test}
CARGO=${CARGO:-cargo}

t0=$EPOCHREALTIME
seconds() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

trap 'bash "$here/setup.sh" stop' EXIT
bash "$here/setup.sh"
setup_s=$(seconds "$t0")

set -a
# shellcheck disable=SC1091
. "$CACHE/run/env"
set +a

t1=$EPOCHREALTIME
cd "$root"
"$CARGO" test --locked -p wgadm --test netbox -- --include-ignored --test-threads=1 --nocapture
echo "netbox-test: NetBox $WGADM_TEST_NETBOX_VERSION: setup ${setup_s} s, tests $(seconds "$t1") s, total $(seconds "$t0") s" >&2
