#!/usr/bin/env bash
# Prints how long wgadm's state commands take on large states (issue 2's benchmark; the target
# is under 50 ms each at 5,000 peers). Numbers only: nothing here passes or fails on time.
set -euo pipefail
cd "$(dirname "$0")/.."
wgadm=$(realpath "${WGADM:-target/release/wgadm}")
[ -x "$wgadm" ] || cargo build --release --locked
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
runs=${RUNS:-15}

# A state of N peers written straight to disk (running `peer add` N times would measure setup,
# not wgadm). Public keys are random 32-byte values: no private keys are involved.
make_state() { # dir subnet peers
  WGADM_STATE=$1 "$wgadm" init --endpoint vpn.example.com --subnet "$2" >/dev/null
  python3 - "$1" "$3" "$2" <<'PY'
import base64, ipaddress, os, sys
d, n, subnet = sys.argv[1], int(sys.argv[2]), ipaddress.ip_network(sys.argv[3])
hosts = subnet.hosts(); next(hosts)  # the server has the first one
for i in range(n):
    key = base64.b64encode(os.urandom(32)).decode()
    with open(f"{d}/peers/p{i:05}.yml", "w") as f:
        f.write(f"address: {next(hosts)}\npublic_key: {key}\nkeepalive: 25\nenabled: true\n")
PY
}

# Median wall time in ms of a command run $runs times; `setup` runs before each run untimed.
median_ms() { # setup-command command...
  local setup=$1; shift
  local times=()
  for _ in $(seq "$runs"); do
    eval "$setup"
    local t0 t1
    t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

printf '%-32s %10s\n' "operation" "median ms"
for spec in "250 192.168.100.0/24" "5000 10.77.0.0/16"; do
  set -- $spec
  n=$1 subnet=$2 dir=$work/s$n
  make_state "$dir" "$subnet" "$n"
  export WGADM_STATE=$dir
  rm_new="\"$wgadm\" peer remove bench-new >/dev/null 2>&1 || true"
  printf '%-32s %10s\n' "peer add ($n peers)" "$(median_ms "$rm_new" "$wgadm" peer add bench-new)"
  printf '%-32s %10s\n' "render ($n peers)" "$(median_ms : "$wgadm" render)"
  printf '%-32s %10s\n' "check ($n peers)" "$(median_ms : "$wgadm" check)"
  printf '%-32s %10s\n' "peer list --json ($n peers)" "$(median_ms : "$wgadm" --json peer list)"
done
