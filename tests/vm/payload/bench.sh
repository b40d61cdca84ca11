#!/bin/bash
# Runs in the VM (tests/vm/bench.list, `make bench-vm`): scripts/bench-lab.sh on the kernel's
# WireGuard module (WGADM_LAB_KERNEL=1, set by payload/run), with the release wgadm and
# wgadm-lab that run.sh built on the host. Few repetitions: TCG is slow, and only the ratios
# (wgadm apply / wg syncconf, forwarded throughput with / without the table) mean anything
# under emulation. The table goes to RESULTS/bench.txt as well as to this script's log.
set -euo pipefail
results=$1
payload=$(cd "$(dirname "$0")" && pwd)
[ "${WGADM_LAB_KERNEL:-}" = 1 ] || { echo "bench.sh: want WGADM_LAB_KERNEL=1 (payload/run sets it)" >&2; exit 1; }
modprobe wireguard
WGADM=$payload/release/wgadm WGADM_LAB=$payload/release/wgadm-lab \
  RUNS=${RUNS:-3} RUNS_BIG=${RUNS_BIG:-3} RUNS_UP=${RUNS_UP:-3} IPERF_SECONDS=${IPERF_SECONDS:-3} \
  bash "$payload/bench-lab.sh" | tee "$results/bench.txt"
