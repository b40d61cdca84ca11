#!/usr/bin/env bash
# wgadm against a live WireGuard interface, wireguard-go (issue 3's benchmark) or the kernel's in
# the VM (tests/vm/bench.list, issue 11). Prints a table of numbers:
#   1. `wgadm apply` of 250 new peers onto a running interface, next to `wg syncconf` making the
#      same change on a twin interface;
#   2. a one-peer change (one peer added) with 250 and with 5,000 peers configured, the same way,
#      with a breakdown of what wgadm's apply spends (its nftables step included);
#   3. the time from `wg-quick up` on a client (config from `wgadm peer config`) to its first
#      answered ping of the server's VPN address (SC-001);
#   4. tunnel throughput (iperf3) and RTT next to the plain veth path (SC-004, SC-007), and the
#      forwarded throughput with table inet wgadm holding 5,000 peers' elements against the same
#      path with no table at all;
#   5. the daemon's poll at 5,000 peers (reading the device through wgadm's device layer) and
#      its resident memory.
# Numbers only: nothing passes or fails on time; it exits non-zero only when something is broken.
#
# Runs as root, in the project's lab (crates/lab: `wgadm-lab run` runs this script again inside
# it): its server, one client, the management host, and three more namespaces for the syncconf
# twin and the 5,000-peer server and its twin. The lab's names carry its PID, so this can run
# beside the lab tests; the lab ends wireguard-go and everything else in its namespaces by PID,
# never by name, and removes them on exit, also on failure. Nothing is connected to the host's
# own network.
#
# Knobs: RUNS (repetitions of cheap measurements, 7), RUNS_BIG (at 5,000 peers, 5), RUNS_UP
# (wg-quick up to first ping, 5), IPERF_SECONDS (5), WGADM (the binary, target/release/wgadm),
# WGADM_LAB (the lab, target/release/wgadm-lab).
set -euo pipefail
shopt -s inherit_errexit
self=$(realpath "$0") # run again inside the lab, from the repository's root
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-lab: needs root (network namespaces)" >&2; exit 1; }
# WGADM_LAB_KERNEL=1 (the VM, tests/vm/payload/bench.sh): the kernel's WireGuard, no wireguard-go.
kernel=${WGADM_LAB_KERNEL:-0}
tools=(ip wg wg-quick nft iperf3 ping ss python3)
[ "$kernel" = 1 ] || tools+=(wireguard-go)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "bench-lab: $tool is missing: run scripts/setup.sh" >&2; exit 1; }
done
runs=${RUNS:-7} runs_big=${RUNS_BIG:-5} runs_up=${RUNS_UP:-5} iperf_seconds=${IPERF_SECONDS:-5}
for knob in "RUNS=$runs" "RUNS_BIG=$runs_big" "RUNS_UP=$runs_up" "IPERF_SECONDS=$iperf_seconds"; do
  [[ ${knob#*=} =~ ^[1-9][0-9]{0,2}$ ]] || { echo "bench-lab: $knob: want a whole number from 1 to 999" >&2; exit 2; }
done
if [ -z "${LAB_NS_SERVER:-}" ]; then
  # The release build of this tree (a no-op when it is up to date), unless both are named.
  [ -n "${WGADM:-}" ] && [ -n "${WGADM_LAB:-}" ] || cargo build --release --locked --quiet
  echo "bench-lab: building the lab" >&2
  exec "$(realpath "${WGADM_LAB:-target/release/wgadm-lab}")" run --clients 1 \
    --namespace twin --namespace big --namespace btwin -- bash "$self" "$@"
fi
wgadm=$(realpath "${WGADM:-target/release/wgadm}")
# Keys stay plaintext in the throwaway states, whatever the caller's environment says.
unset ANSIBLE_VAULT_PASSWORD_FILE

work=$LAB_DIR/bench # in the lab's 0700 directory: configs with private keys go here
mkdir -p "$work"
ns_srv=$LAB_NS_SERVER     # wgadm's server (250 peers), its client and management host
ns_twin=$LAB_NS_TWIN      # the same interface driven by wg syncconf
ns_big=$LAB_NS_BIG        # wgadm's server with 5,000 peers
ns_bigtwin=$LAB_NS_BTWIN  # its wg syncconf twin
ns_cli=$LAB_NS_CLIENTS    # a client using the config from `wgadm peer config` (the lab's client 0)
ns_mgmt=$LAB_NS_MGMT      # a management host behind the server (192.168.1.10)
# WireGuard interface names: wireguard-go's socket /var/run/wireguard/NAME.sock is not
# namespaced, so they start with the lab's machine-wide unique prefix.
p=$LAB_WG_PREFIX
if_srv=${p}s if_twin=${p}t if_big=${p}b if_bigtwin=${p}u if_cli=${p}c
background=() # PIDs of the iperf3 servers and the daemon

# The lab removes everything else when this exits (wg-quick's wireguard-go runs through its
# wrapper, WG_QUICK_USERSPACE_IMPLEMENTATION).
cleanup() {
  local status=$? pid
  set +e
  trap - EXIT INT TERM
  for pid in "${background[@]}"; do
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { echo "bench-lab: $*" >&2; exit 1; }

export WGADM_CONFIG_DIR=$work/wireguard
state=$work/state big=$work/big # the two wgadm states
mkdir -p "$work/cfg" "$work/held" "$work/bigheld"

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# Runs a command in namespace $1 with stdout to $2 and prints its wall time in microseconds
# (measured inside the namespace, so `ip netns exec` itself is not counted). A failure stops the
# benchmark with the command's error output.
time_in() {
  local ns=$1 out=$2
  shift 2
  # shellcheck disable=SC2016 # expanded by the inner bash
  OUT=$out ERR=$work/err ip netns exec "$ns" bash -c '
    t0=${EPOCHREALTIME//[!0-9]/}
    "$@" >"$OUT" 2>"$ERR" || { s=$?; echo "bench-lab: failed ($s): $*" >&2; cat "$ERR" >&2; exit 1; }
    t1=${EPOCHREALTIME//[!0-9]/}
    echo $((t1 - t0))' time_in "$@"
}

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
row() {
  printf '   %-66s %4s %10s' "$1" "$2" "$3"
  [ -z "${4:-}" ] || printf ' %s' "$4"
  echo
}
heading() { printf '\n%s\n' "$*"; }

# Fails unless wgadm's `--json apply` output in FILE did exactly what is being measured.
expect_apply() { # file added removed firewall_changed changed
  python3 - "$@" <<'PY'
import json, sys
path, added, removed, fw, changed = sys.argv[1:]
d = json.load(open(path))
got = (len(d["added"]), len(d["removed"]), len(d["updated"]), d["firewall_changed"], d["changed"])
want = (int(added), int(removed), 0, fw == "true", changed == "true")
if got != want:
    sys.exit(f"bench-lab: wgadm apply did something else than measured: "
             f"(added, removed, updated, firewall_changed, changed) = {got}, expected {want}")
PY
}

# Peer files written straight to disk (as scripts/bench.sh does): random 32-byte public keys, the
# addresses after the first `skip` hosts of the subnet.
make_peers() { # dir count subnet skip
  python3 - "$@" <<'PY'
import base64, ipaddress, os, sys
d, n, subnet, skip = sys.argv[1], int(sys.argv[2]), ipaddress.ip_network(sys.argv[3]), int(sys.argv[4])
hosts = subnet.hosts()
for _ in range(skip):
    next(hosts)
for i in range(n):
    key = base64.b64encode(os.urandom(32)).decode()
    with open(f"{d}/b{i:05}.yml", "w") as f:
        f.write(f"address: {next(hosts)}\npublic_key: {key}\nkeepalive: 25\nenabled: true\n")
PY
}

# The peers of interface $2 in namespace $1 as configured (key, preshared key, allowed IPs,
# keepalive), sorted: what must be equal on wgadm's interface and its syncconf twin. The first
# line of the dump holds the private key and is skipped.
peer_config() { in_ns "$1" wg show "$2" dump | tail -n +2 | cut -f1,2,4,8 | sort; }
same_peers() { # ns iface twin-ns twin-iface
  peer_config "$1" "$2" >"$work/a.peers"
  peer_config "$3" "$4" >"$work/b.peers"
  cmp -s "$work/a.peers" "$work/b.peers" ||
    fail "$2 (wgadm) and $4 (wg syncconf) differ after the same change"
}

# `wg-quick strip` of the wg-quick config of state $1 as it is now (what syncconf reads).
stripped() { # state name
  "$wgadm" --state "$1" render >"$work/cfg/$2.conf"
  chmod 600 "$work/cfg/$2.conf"
  wg-quick strip "$work/cfg/$2.conf" >"$work/cfg/$2.stripped"
  echo "$work/cfg/$2.stripped"
}

wait_socket_gone() { # iface
  local i
  for i in $(seq 300); do
    [ -e "/var/run/wireguard/$1.sock" ] || return 0
    sleep 0.01
  done
  fail "the socket of $1 is still there 3 s after wg-quick down"
}

# Moves the peer files matching a glob from one directory into another.
move() { # from glob to
  # shellcheck disable=SC2086 # the glob is meant to expand
  mv -t "$3" "$1"/$2
}

# One change measured both ways, RUNS times. The change moves the peer files matching PATTERN
# from HELD into STATE/peers: "after" has them in STATE/peers (as it must at the start), "before"
# in HELD. Per run:
#   a) from "before" (both interfaces reset, untimed): `wgadm apply` (everything: state, device,
#      config file, nft table) and `wg syncconf` of the stripped "after" config on the twin;
#   b) from "before" again: `nft -f` of the "after" ruleset alone, then `wgadm apply` with the
#      firewall already in sync (its nft part is then reading the table's digest and the drop
#      counters), then `wgadm apply` with nothing to do.
# Leaves both interfaces in the "after" state. Sets res_* (medians in microseconds).
compare() { # runs ns iface state twin-ns twin-iface before.stripped after.stripped after.rules held pattern count
  local n=$1 ns=$2 iface=$3 st=$4 tns=$5 tif=$6 before=$7 after=$8 rules=$9 held=${10} pattern=${11} count=${12}
  local full=() sync=() nft=() dev=() noop=() fwpart=() t i
  for i in $(seq "$n"); do
    move "$st/peers" "$pattern" "$held"
    in_ns "$ns" "$wgadm" --state "$st" apply >/dev/null
    in_ns "$tns" wg syncconf "$tif" "$before"
    move "$held" "$pattern" "$st/peers"
    # With its steps' times on stderr: the firewall part is its nft change and the gate
    # (verifying the table in force, the ip rule, the forwarding switches).
    t=$(WGADM_TIMINGS=1 time_in "$ns" "$work/out" "$wgadm" --state "$st" --json apply)
    expect_apply "$work/out" "$count" 0 true true
    full+=("$t")
    fwpart+=("$(sed -n 's/.* nft_put=\([0-9.]*\) gate=\([0-9.]*\) .*/\1 \2/p' "$work/err" |
      awk '{ printf "%d", ($1 + $2) * 1000 }')")
    sync+=("$(time_in "$tns" /dev/null wg syncconf "$tif" "$after")")
    [ "$i" -gt 1 ] || same_peers "$ns" "$iface" "$tns" "$tif"

    move "$st/peers" "$pattern" "$held"
    in_ns "$ns" "$wgadm" --state "$st" apply >/dev/null
    move "$held" "$pattern" "$st/peers"
    nft+=("$(time_in "$ns" /dev/null nft -f "$rules")")
    t=$(time_in "$ns" "$work/out" "$wgadm" --state "$st" --json apply)
    expect_apply "$work/out" "$count" 0 false true
    dev+=("$t")
    t=$(time_in "$ns" "$work/out" "$wgadm" --state "$st" --json apply)
    expect_apply "$work/out" 0 0 false false
    noop+=("$t")
  done
  res_full=$(median "${full[@]}") res_sync=$(median "${sync[@]}") res_nft=$(median "${nft[@]}")
  res_dev=$(median "${dev[@]}") res_noop=$(median "${noop[@]}")
  res_fwpart=$(median "${fwpart[@]}")
}

# What `wgadm apply` with nothing to do is made of, each part alone (medians over RUNS), and
# syncconf the way wg-quick's manual pairs it: `wg syncconf IF <(wg-quick strip IF)`. Call right
# after `compare` (it reads res_*).
parts() { # runs ns iface state
  local n=$1 ns=$2 iface=$3 st=$4 i strip_us
  local render=() tables=() dump=() digest=() listing=() drops=() strip=()
  for i in $(seq "$n"); do
    render+=("$(time_in "$ns" /dev/null "$wgadm" --state "$st" render)")
    tables+=("$(time_in "$ns" /dev/null nft list tables)")
    dump+=("$(time_in "$ns" /dev/null wg show "$iface" dump)")
    digest+=("$(time_in "$ns" /dev/null nft list set inet wgadm ruleset_digest)")
    listing+=("$(time_in "$ns" /dev/null nft -t list table inet wgadm)")
    drops+=("$(time_in "$ns" /dev/null nft -j list set inet wgadm deny_drops)")
    strip+=("$(time_in "$ns" /dev/null wg-quick strip "$work/cfg/after-$iface.conf")")
  done
  strip_us=$(median "${strip[@]}")
  row "  of which, alone: wgadm render (load and check the state, render)" "$n" "$(ms "$(median "${render[@]}")") ms"
  row "  nft list tables (wgadm's nft preflight)" "$n" "$(ms "$(median "${tables[@]}")") ms"
  row "  nft -j list set inet wgadm deny_drops (the drop counters)" "$n" "$(ms "$(median "${drops[@]}")") ms"
  res_digest=$(median "${digest[@]}")
  row "  nft list set inet wgadm ruleset_digest (which ruleset is in force)" "$n" "$(ms "$res_digest") ms"
  row "  nft -t list table inet wgadm (not run by wgadm: the table listing)" "$n" "$(ms "$(median "${listing[@]}")") ms"
  row "  wg show IF dump (not run by wgadm: it reads the device in-process)" "$n" "$(ms "$(median "${dump[@]}")") ms"
  row "wg-quick strip of the config (syncconf's input, not in its time)" "$n" "$(ms "$strip_us") ms"
  row "ratio wgadm apply / (wg-quick strip + wg syncconf)" "" "$(ratio "$res_full" $((strip_us + res_sync)))" "(syncconf as wg-quick(8) pairs it)"
  # The firewall's share of the apply, as wgadm itself times it (WGADM_TIMINGS): the in-place
  # change and the gate (the digest read, ip rule, forwarding switches). The digest read before
  # it runs beside the device read and is not counted.
  res_fw=$res_fwpart
  row "firewall part of the apply (nft change + verify and gate, WGADM_TIMINGS)" "" "$(ms "$res_fw") ms" "(target < 5 ms at 5,000)"
}

report_compare() { # runs label
  local n=$1 label=$2
  row "wgadm apply, all included (state, device, config file, nft change)" "$n" "$(ms "$res_full") ms"
  row "wg syncconf of the stripped config (made beforehand)" "$n" "$(ms "$res_sync") ms"
  row "ratio wgadm apply / wg syncconf" "" "$(ratio "$res_full" "$res_sync")" "($label; target <= 1.5)"
  row "  nft -f of the whole new ruleset alone (a table reload, for scale)" "$n" "$(ms "$res_nft") ms"
  row "  wgadm apply with the firewall already in sync (nft reads only)" "$n" "$(ms "$res_dev") ms" "(ratio to syncconf $(ratio "$res_dev" "$res_sync"))"
  row "  wgadm apply with nothing to do (reads and compares only)" "$n" "$(ms "$res_noop") ms"
}

# ---------------------------------------------------------------------------------------------
# The lab's client 0 (198.51.100.10) and server (198.51.100.1) share its wan bridge; the server's
# management network (192.168.1.1) holds the management host (192.168.1.10).
# The 250-peer server and its twin, both running with no peers.
"$wgadm" --state "$state" init --endpoint 198.51.100.1 --interface "$if_srv" >/dev/null
in_ns "$ns_srv" "$wgadm" --state "$state" apply >/dev/null
base=$(stripped "$state" "base-$if_srv")
cp "$work/cfg/base-$if_srv.conf" "$work/cfg/$if_twin.conf"
in_ns "$ns_twin" wg-quick up "$work/cfg/$if_twin.conf" 2>"$work/wg-quick.log" ||
  { cat "$work/wg-quick.log" >&2; fail "wg-quick up of the syncconf twin failed"; }
make_peers "$state/peers" 250 192.168.100.0/24 1 # .2 to .251
all250=$(stripped "$state" "all-$if_srv")
"$wgadm" --state "$state" firewall show >"$work/cfg/all-$if_srv.rules"

cpus=$(nproc)
read -r load _ </proc/loadavg
if [ "$kernel" = 1 ]; then
  wg_impl="the kernel's WireGuard module $(cat /sys/module/wireguard/version 2>/dev/null)"
else
  wg_impl=$(wireguard-go --version | awk 'NR == 1 { print $1, $2 }')
fi
printf 'wgadm lab benchmark: %s, %s, kernel %s, %s CPUs, load average %s at start\n' \
  "$wg_impl" "$(nft --version | awk '{ print $1, $2 }')" \
  "$(uname -r)" "$cpus" "$load"
echo "Times: median wall time of each command, from its start to its exit, inside the namespace."
echo "wgadm apply always includes reading the state and the device, writing the wg-quick config"
echo "when it changed, and its nftables step (table inet wgadm); wg syncconf only sets the device."
printf '\n   %-66s %4s %10s\n' "" "runs" "median"

heading "1. 250 new peers onto a running interface with no peers"
compare "$runs" "$ns_srv" "$if_srv" "$state" "$ns_twin" "$if_twin" "$base" "$all250" \
  "$work/cfg/all-$if_srv.rules" "$work/held" 'b*.yml' 250
report_compare "$runs" "250 new peers"
ratio_250new=$(ratio "$res_full" "$res_sync")

heading "2a. one peer added with 250 peers configured"
"$wgadm" --state "$state" peer add bench-new --public-key "$(head -c 32 /dev/urandom | base64)" >/dev/null
after=$(stripped "$state" "after-$if_srv")
"$wgadm" --state "$state" firewall show >"$work/cfg/after-$if_srv.rules"
compare "$runs" "$ns_srv" "$if_srv" "$state" "$ns_twin" "$if_twin" "$all250" "$after" \
  "$work/cfg/after-$if_srv.rules" "$work/held" 'bench-new.yml' 1
report_compare "$runs" "one of 251"
ratio_250=$(ratio "$res_full" "$res_sync") dev_250=$(ratio "$res_dev" "$res_sync")
parts "$runs" "$ns_srv" "$if_srv" "$state"

heading "2b. one peer added with 5,000 peers configured"
"$wgadm" --state "$big" init --endpoint 198.51.100.1 --interface "$if_big" --subnet 10.77.0.0/16 >/dev/null
in_ns "$ns_big" "$wgadm" --state "$big" apply >/dev/null
stripped "$big" "base-$if_big" >/dev/null
cp "$work/cfg/base-$if_big.conf" "$work/cfg/$if_bigtwin.conf"
in_ns "$ns_bigtwin" wg-quick up "$work/cfg/$if_bigtwin.conf" 2>"$work/wg-quick.log" ||
  { cat "$work/wg-quick.log" >&2; fail "wg-quick up of the 5,000-peer syncconf twin failed"; }
make_peers "$big/peers" 5000 10.77.0.0/16 1
big5000=$(stripped "$big" "all-$if_big")
t_full=$(time_in "$ns_big" "$work/out" "$wgadm" --state "$big" --json apply)
expect_apply "$work/out" 5000 0 true true
t_sync=$(time_in "$ns_bigtwin" /dev/null wg syncconf "$if_bigtwin" "$big5000")
same_peers "$ns_big" "$if_big" "$ns_bigtwin" "$if_bigtwin"
row "(setup) wgadm apply of 5,000 new peers onto no peers" 1 "$(ms "$t_full") ms"
row "(setup) wg syncconf of the same" 1 "$(ms "$t_sync") ms" "(ratio $(ratio "$t_full" "$t_sync"))"
"$wgadm" --state "$big" peer add bench-new --public-key "$(head -c 32 /dev/urandom | base64)" >/dev/null
after=$(stripped "$big" "after-$if_big")
"$wgadm" --state "$big" firewall show >"$work/cfg/after-$if_big.rules"
compare "$runs_big" "$ns_big" "$if_big" "$big" "$ns_bigtwin" "$if_bigtwin" "$big5000" "$after" \
  "$work/cfg/after-$if_big.rules" "$work/bigheld" 'bench-new.yml' 1
report_compare "$runs_big" "one of 5,001"
ratio_5000=$(ratio "$res_full" "$res_sync") dev_5000=$(ratio "$res_dev" "$res_sync")
parts "$runs_big" "$ns_big" "$if_big" "$big"
fw_5000=$res_fw

heading "3. wg-quick up on a client (config from wgadm peer config) to its first answered ping (SC-001)"
"$wgadm" --state "$state" peer add client >/dev/null
in_ns "$ns_srv" "$wgadm" --state "$state" --json apply >"$work/out"
expect_apply "$work/out" 1 0 true true
client_conf=$work/cfg/$if_cli.conf
(umask 077 && "$wgadm" --state "$state" peer config client >"$client_conf")
ups=() pings=()
for _ in $(seq "$runs_up"); do
  wait_socket_gone "$if_cli"
  # shellcheck disable=SC2016 # expanded by the inner bash
  read -r up total < <(ip netns exec "$ns_cli" bash -c '
    t0=${EPOCHREALTIME//[!0-9]/}
    wg-quick up "$1" 2>"$2" || { cat "$2" >&2; exit 1; }
    t1=${EPOCHREALTIME//[!0-9]/}
    ping -n -q -c 1 -w 5 -i 0.05 192.168.100.1 >/dev/null || { echo "no answer within 5 s" >&2; exit 1; }
    t2=${EPOCHREALTIME//[!0-9]/}
    echo $((t1 - t0)) $((t2 - t0))' up "$client_conf" "$work/wg-quick.log") ||
    fail "the client could not reach the server's VPN address"
  ups+=("$up") pings+=("$total")
  in_ns "$ns_cli" wg-quick down "$client_conf" 2>/dev/null
done
t_first=$(median "${pings[@]}")
row "wg-quick up alone (the link or wireguard-go, addresses, routes)" "$runs_up" "$(ms "$(median "${ups[@]}")") ms"
row "wg-quick up until the first answered ping of 192.168.100.1" "$runs_up" "$(ms "$t_first") ms" \
  "(min $(ms "$(printf '%s\n' "${pings[@]}" | sort -n | head -1)"), max $(ms "$(printf '%s\n' "${pings[@]}" | sort -n | tail -1)"); target < 5000 ms)"

heading "4. throughput (iperf3, one stream, ${iperf_seconds} s) and RTT (ping -c 20 -i 0.05), client to ..."
wait_socket_gone "$if_cli"
in_ns "$ns_cli" wg-quick up "$client_conf" 2>"$work/wg-quick.log" ||
  { cat "$work/wg-quick.log" >&2; fail "wg-quick up of the client failed"; }
for ns in "$ns_srv" "$ns_mgmt"; do
  ip netns exec "$ns" iperf3 -s -p 5201 >"$work/iperf3-$ns.log" 2>&1 &
  background+=("$!")
done
for ns in "$ns_srv" "$ns_mgmt"; do
  for i in $(seq 200); do
    [ -z "$(in_ns "$ns" ss -Hltn 'sport = :5201')" ] || break
    [ "$i" -lt 200 ] || fail "iperf3 does not listen in $ns: $(cat "$work/iperf3-$ns.log")"
    sleep 0.02
  done
done
in_ns "$ns_cli" ping -n -q -c 3 -i 0.05 -w 5 192.168.1.10 >/dev/null || fail "no ping through the tunnel to 192.168.1.10"
rtt() { # address: "average median max" RTT in ms of 20 pings (one stall moves only the average)
  in_ns "$ns_cli" ping -n -c 20 -i 0.05 -w 10 "$1" >"$work/ping.out" || fail "ping $1 failed: $(cat "$work/ping.out")"
  sed -n 's/.* time=\([0-9.]*\) ms.*/\1/p' "$work/ping.out" | sort -n |
    awk '{ t[NR] = $1; sum += $1 } END { if (NR) printf "%.3f %.3f %.3f\n", sum / NR, t[int((NR + 1) / 2)], t[NR] }'
}
mbits() { # address: receiver's Mbit/s
  local result
  in_ns "$ns_cli" timeout $((iperf_seconds + 30)) iperf3 -c "$1" -p 5201 -t "$iperf_seconds" -f m \
    >"$work/iperf3.out" 2>&1 || fail "iperf3 to $1 failed: $(cat "$work/iperf3.out")"
  result=$(awk '/receiver/ { print $(NF - 2) }' "$work/iperf3.out")
  awk -v r="$result" 'BEGIN { exit !(r > 0) }' || fail "iperf3 to $1 moved nothing: $(cat "$work/iperf3.out")"
  echo "$result"
}
read -r rtt_veth med_veth max_veth < <(rtt 198.51.100.1) || fail "no RTT to 198.51.100.1"
read -r rtt_tun med_tun max_tun < <(rtt 192.168.100.1) || fail "no RTT to 192.168.100.1"
read -r rtt_mgmt med_mgmt max_mgmt < <(rtt 192.168.1.10) || fail "no RTT to 192.168.1.10"
bw_veth=$(mbits 198.51.100.1)
bw_tun=$(mbits 192.168.100.1)
bw_mgmt=$(mbits 192.168.1.10)
for value in "$rtt_veth" "$rtt_tun" "$rtt_mgmt" "$bw_veth" "$bw_tun" "$bw_mgmt"; do
  [ -n "$value" ] || fail "could not read ping's RTT or iperf3's throughput"
done
printf '   %-44s %8s %10s %10s %10s\n' "" "Mbit/s" "RTT avg" "median" "max ms"
printf '   %-44s %8s %10s %10s %10s\n' "server over the plain veth (198.51.100.1)" "$bw_veth" "$rtt_veth" "$med_veth" "$max_veth"
printf '   %-44s %8s %10s %10s %10s\n' "server's VPN address (192.168.100.1)" "$bw_tun" "$rtt_tun" "$med_tun" "$max_tun"
printf '   %-44s %8s %10s %10s %10s\n' "management host (192.168.1.10), forwarded" "$bw_mgmt" "$rtt_mgmt" "$med_mgmt" "$max_mgmt"
echo "   (through the tunnel: $wg_impl at both ends; to the management host also the server's"
echo "   forwarding through table inet wgadm and its masquerade)"

# The same forwarded path with the table holding 5,000 more peers' elements (10.77.x, as the big
# server's), then with no table at all: the gate rule (which drops VPN traffic while the table
# is gone) is taken out for that one measurement, and both come back with `wgadm apply`.
"$wgadm" --state "$state" firewall show >"$work/cfg/fw-now.rules"
python3 - "$work/cfg/fw-now.rules" "$work/cfg/fw5000.nft" <<'PY'
import sys
text = open(sys.argv[1]).read()
extra = [f"10.77.{1 + i // 250}.{1 + i % 250}" for i in range(5000)]
def fill(text, name, element):
    head = f"\tset {name} {{"
    at = text.index(head)
    body_end = text.index("\n\t}\n", at)
    body = text[at:body_end]
    lines = "".join(f"\t\t\t{element(a)},\n" for a in extra)
    if "elements = {" in body:
        i = text.index("elements = {\n", at) + len("elements = {\n")
        return text[:i] + lines + text[i:]
    return text[:body_end] + "\n\t\telements = {\n" + lines + "\t\t}" + text[body_end:]
text = fill(text, "deny_drops", lambda a: a)
text = fill(text, "access", lambda a: f"{a} . 192.168.0.0/16")
open(sys.argv[2], "w").write(text)
PY
in_ns "$ns_srv" nft -f "$work/cfg/fw5000.nft" || fail "the table with 5,000 more peers' elements was refused"
elements=$(in_ns "$ns_srv" nft -j list set inet wgadm deny_drops | python3 -c 'import json,sys; print(sum(len(x["set"].get("elem", [])) for x in json.load(sys.stdin)["nftables"] if "set" in x))')
bw_5000=$(mbits 192.168.1.10)
in_ns "$ns_srv" nft delete table inet wgadm
gate=$(in_ns "$ns_srv" ip -4 rule show priority 100 | sed 's/^[0-9]*:[[:space:]]*//')
[ -z "$gate" ] || in_ns "$ns_srv" ip -4 rule del priority 100
in_ns "$ns_cli" ping -n -q -c 3 -i 0.05 -w 5 192.168.1.10 >/dev/null || fail "no ping to 192.168.1.10 without the table"
bw_none=$(mbits 192.168.1.10)
in_ns "$ns_srv" "$wgadm" --state "$state" apply >/dev/null
in_ns "$ns_srv" nft list set inet wgadm ruleset_digest >/dev/null || fail "wgadm apply did not restore the table"
printf '   %-44s %8s\n' "management host, table with $elements peer elements" "$bw_5000"
printf '   %-44s %8s\n' "management host, no table (gate rule out too)" "$bw_none"
ratio_fwd=$(ratio "$bw_5000" "$bw_none")
row "ratio forwarded throughput with the 5,000-peer table / no table" "" "$ratio_fwd" "(target >= 0.95; one run each)"
in_ns "$ns_cli" wg-quick down "$client_conf" 2>/dev/null

heading "5. wgadm daemon at 5,000 peers: its poll (device read, join, snapshot) and memory"
# It reads the device through wgadm's device layer (UAPI on wireguard-go, generic netlink on the
# kernel), no process per poll.
# Started by `ip netns exec` itself (it execs wgadm), so $! is the daemon's own PID.
ip netns exec "$ns_big" "$wgadm" --state "$big" daemon --interval 0.2 --snapshot "$work/snap.json" \
  --metrics-listen off >"$work/daemon.log" 2>&1 &
daemon_pid=$!
background+=("$daemon_pid")
polls=0
for _ in $(seq 600); do
  polls=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["daemon"]["polls"])' "$work/snap.json" 2>/dev/null || echo 0)
  [ "$polls" -lt 30 ] || break
  kill -0 "$daemon_pid" 2>/dev/null || fail "wgadm daemon exited: $(cat "$work/daemon.log")"
  sleep 0.1
done
[ "$polls" -ge 30 ] || fail "wgadm daemon made $polls polls in 60 s"
read -r poll_mean poll_last < <(python3 - "$work/snap.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["daemon"]
print(f"{d['poll_seconds_total'] / d['polls'] * 1e6:.0f} {d['last_poll_seconds'] * 1e6:.0f}")
PY
)
rss_kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$daemon_pid/status")
hwm_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$daemon_pid/status")
kill -TERM "$daemon_pid"
wait "$daemon_pid" 2>/dev/null || true
# Waited for: its PID may be reused, so the cleanup must not end it again.
kept=()
for pid in "${background[@]}"; do [ "$pid" = "$daemon_pid" ] || kept+=("$pid"); done
background=("${kept[@]}")
dump_us=()
for _ in $(seq "$runs_big"); do dump_us+=("$(time_in "$ns_big" /dev/null wg show "$if_big" dump)"); done
row "daemon poll, mean over $polls polls (5,001 peers)" "$polls" "$(ms "$poll_mean") ms" "(last $(ms "$poll_last") ms; target < 5 ms)"
row "  wg show IF dump alone, for scale (the old per-poll process)" "$runs_big" "$(ms "$(median "${dump_us[@]}")") ms"
row "daemon resident memory (VmRSS, peak VmHWM)" "" "$((rss_kb / 1024)) MiB" "(peak $((hwm_kb / 1024)) MiB)"

overhead=$(awk -v a="$rtt_tun" -v b="$rtt_veth" 'BEGIN { printf "%.3f", a - b }')
overhead_med=$(awk -v a="$med_tun" -v b="$med_veth" 'BEGIN { printf "%.3f", a - b }')
heading "Targets (reported, not judged here)"
row "SC-001 wg-quick up to first answered ping < 5 s" "" "$(ms "$t_first") ms"
row "SC-004 tunnel throughput >= 100 Mbit/s" "" "$bw_tun Mbit/s"
row "SC-007 RTT overhead of the tunnel < 10 ms (averages)" "" "$overhead ms" "(medians: $overhead_med ms)"
row "wgadm apply / wg syncconf <= 1.5: 250 new peers" "" "$ratio_250new"
row "  one peer added at 250 peers (firewall in sync: $dev_250)" "" "$ratio_250"
row "  one peer added at 5,000 peers (firewall in sync: $dev_5000)" "" "$ratio_5000"
row "firewall part of that apply at 5,000 peers < 5 ms" "" "$(ms "$fw_5000") ms"
row "forwarded throughput, 5,000-peer table / no table >= 0.95" "" "$ratio_fwd"
row "daemon poll at 5,000 peers < 5 ms" "" "$(ms "$poll_mean") ms" "(RSS $((rss_kb / 1024)) MiB)"
read -r load _ </proc/loadavg
echo "(load average $load at the end: other work on this machine inflates every number above)"
