#!/bin/bash
# Records what the kernel's WireGuard does where wireguard-go is known to differ (DESIGN.md,
# docs/kernel.md): messages and exit codes of `wg` for a missing interface, a listen port in
# use, whether re-setting the listen port or an identical `wg syncconf` costs a packet, and what
# is left when the link is deleted. Observations, not assertions: it fails only when the probe
# itself cannot run. Output: RESULTS/kernel-facts.txt (also on stdout).
set -uo pipefail
results=$1
out="$results/kernel-facts.txt"
a=vmfacts-a b=vmfacts-b
cleanup() {
  for n in $a $b; do
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$n" 2>/dev/null
  done
}
trap cleanup EXIT
fact() { echo "$*" | tee -a "$out"; }
# `wg ARGS` in namespace $1: exit code and stderr, one line.
wg_says() {
  local n=$1
  shift
  local err rc
  err=$(ip netns exec "$n" wg "$@" 2>&1 >/dev/null)
  rc=$?
  fact "  wg $* -> exit $rc: ${err//$'\n'/ | }"
}
die() { fact "probe failed: $*"; exit 1; }
: >"$out"
fact "kernel $(uname -r), wireguard module $(cat /sys/module/wireguard/version), $(wg --version)"

ip netns add $a && ip netns add $b || die "netns"
ip -n $a link add va type veth peer name vb netns $b || die "veth"
ip -n $a addr add 10.99.0.1/24 dev va && ip -n $b addr add 10.99.0.2/24 dev vb
ip -n $a link set va up && ip -n $b link set vb up
ip -n $a link set lo up && ip -n $b link set lo up

fact "A missing interface:"
wg_says $a show wgnosuch
wg_says $a show wgnosuch dump
wg_says $a showconf wgnosuch
wg_says $a set wgnosuch listen-port 1

umask 077
ka=$(wg genkey) kb=$(wg genkey)
pa=$(echo "$ka" | wg pubkey) pb=$(echo "$kb" | wg pubkey)
echo "$ka" >/run/vmfacts-a.key
echo "$kb" >/run/vmfacts-b.key
ip -n $a link add wga type wireguard || die "ip link add type wireguard"
fact "A new kernel link before any setting:"
fact "  listen-port before up: $(ip netns exec $a wg show wga listen-port)"
ip -n $a link set wga up
fact "  listen-port after up (none set): $(ip netns exec $a wg show wga listen-port)"
ip netns exec $a wg set wga private-key /run/vmfacts-a.key listen-port 51820 peer "$pb" \
  allowed-ips 10.98.0.2/32 endpoint 10.99.0.2:51820
ip -n $a addr add 10.98.0.1/24 dev wga
ip -n $b link add wgb type wireguard
ip netns exec $b wg set wgb private-key /run/vmfacts-b.key listen-port 51820 peer "$pa" \
  allowed-ips 10.98.0.1/32 endpoint 10.99.0.1:51820
ip -n $b addr add 10.98.0.2/24 dev wgb
ip -n $b link set wgb up
ip netns exec $a ping -n -c1 -W5 10.98.0.2 >/dev/null || die "no tunnel between the namespaces"

# A 10 ms ping loop from a to b while a's listen port is re-set to its own value, and while
# an identical config is synced; each change is met by ~20 pings (rx counter polled).
rx() { ip netns exec $b wg show wgb transfer | cut -f2; }
# Waits (5 s at most) until b has received ~20 more pings: the loop met the change.
meet() {
  local r end
  r=$(rx)
  end=$(($(date +%s) + 5))
  while [ $(($(rx) - r)) -lt 2560 ] && [ "$(date +%s)" -lt $end ]; do sleep 0.02; done
}
loss_during() {
  local what=$1
  shift
  ip netns exec $a ping -n -i 0.01 10.98.0.2 >/run/vmfacts-ping.out 2>&1 &
  local ping=$!
  meet
  for _ in $(seq 5); do "$@"; meet; done
  kill -INT $ping
  wait $ping 2>/dev/null
  local seqs lost
  seqs=$(grep -o 'icmp_seq=[0-9]*' /run/vmfacts-ping.out | cut -d= -f2 | sort -n)
  lost=$(python3 -c 'import sys; s=set(map(int,sys.argv[1].split())); print([i for i in range(1,max(s,default=1)) if i not in s])' "$seqs")
  fact "  $what x5: $(tail -n2 /run/vmfacts-ping.out | head -n1); lost seq $lost"
}
fact "Re-setting interface fields under a 10 ms ping loop:"
loss_during "wg set listen-port 51820 (same value)" ip netns exec $a wg set wga listen-port 51820
ip netns exec $a wg showconf wga >/run/vmfacts-a.conf
loss_during "wg syncconf (identical config)" ip netns exec $a wg syncconf wga /run/vmfacts-a.conf
loss_during "wg set private-key (same key)" ip netns exec $a wg set wga private-key /run/vmfacts-a.key
loss_during "wg set peer ... allowed-ips (same)" ip netns exec $a wg set wga peer "$pb" allowed-ips 10.98.0.2/32
rm -f /run/vmfacts-a.conf

fact "A listen port in use by another socket:"
ip netns exec $a python3 -c 'import socket,time; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("0.0.0.0",51830)); print("bound",flush=True); time.sleep(60)' >/run/vmfacts-holder.out &
holder=$!
for _ in $(seq 100); do grep -q bound /run/vmfacts-holder.out && break; sleep 0.05; done
wg_says $a set wga listen-port 51830
fact "  listen-port afterwards: $(ip netns exec $a wg show wga listen-port)"
fact "  the tunnel afterwards: $(ip netns exec $a ping -n -c1 -W5 10.98.0.2 >/dev/null && echo works || echo broken)"
kill $holder 2>/dev/null; wait $holder 2>/dev/null

fact "Deleting and recreating the link:"
before=$(ip -n $a -o link show wga | cut -d: -f1)
ip -n $a link del wga
fact "  processes left in the namespace: $(ip netns pids $a | wc -l)"
wg_says $a show wga
ip -n $a link add wga type wireguard
after=$(ip -n $a -o link show wga | cut -d: -f1)
fact "  recreated: ifindex $before -> $after; peers: $(ip netns exec $a wg show wga peers | wc -l), private key set: $(ip netns exec $a wg show wga private-key | grep -qv none && echo yes || echo no)"
again=$(ip -n $a link add wga type wireguard 2>&1)
fact "  a second 'ip link add wga type wireguard': exit $?: $again"
rm -f /run/vmfacts-*.key /run/vmfacts-*.out
exit 0
