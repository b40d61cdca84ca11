#!/bin/bash
# A diagnostic, not in tests.list: does loading a whole nftables ruleset lose forwarded packets?
# Builds client -> router -> host namespaces joined by veth pairs (no WireGuard, no wgadm), loads
# a table shaped like wgadm's in the router (a concatenated interval set `access` that decides
# what is forwarded, the gate mark, masquerade), pings through it every 5 ms, and loads the same
# table LOADS times, each way:
#   table    `table inet wgadm; delete table inet wgadm; table inet wgadm {...}` (wgadm before)
#   inplace  `flush table`, the sets declared and flushed, then the table block (wgadm now)
# Prints one line per round and way: loads, ms per load, pings sent and answered.
#   bash firewall-replace.sh [RESULTS-DIR]      (root; ROUNDS=2 LOADS=30 by default)
# In the VM: WGADM_VM_LIST=<a list with "1 script firewall-replace.sh"> bash tests/vm/run.sh
set -u
tmpd=${1:-/tmp}
rounds=${ROUNDS:-2} loads=${LOADS:-30}
p=fr$$
A=${p}a R=${p}r B=${p}b
made=()
cleanup() { for n in "${made[@]}"; do ip netns del "$n" 2>/dev/null; done; rm -f "$tmpd/ping.$p"; }
trap cleanup EXIT
for n in $A $R $B; do ip netns add "$n" && made+=("$n"); ip -n "$n" link set lo up; done
ip link add ${p}x netns $A type veth peer name ${p}y netns $R
ip link add ${p}z netns $R type veth peer name ${p}w netns $B
ip -n $A addr add 192.168.100.2/24 dev ${p}x
ip -n $A link set ${p}x up
ip -n $A route add default via 192.168.100.1
ip -n $R addr add 192.168.100.1/24 dev ${p}y
ip -n $R link set ${p}y up
ip -n $R addr add 192.168.1.1/24 dev ${p}z
ip -n $R link set ${p}z up
ip -n $B addr add 192.168.1.11/24 dev ${p}w
ip -n $B link set ${p}w up
ip -n $B route add default via 192.168.1.1
ip netns exec $R sysctl -qw net.ipv4.ip_forward=1
ip -n $R rule add priority 100 iif ${p}y fwmark 0x0/0x20000000 blackhole

body() {
  cat <<T
table inet wgadm {
  set ruleset_digest { type mark; elements = { 0 comment "wgadm:$1" } }
  set deny { type ipv4_addr; flags interval; elements = { 172.16.10.0/24 } }
  set deny_drops { type ipv4_addr; counter; elements = { 192.168.100.2, 192.168.100.3 } }
  set access { type ipv4_addr . ipv4_addr; flags interval; elements = { 192.168.100.2 . 192.168.0.0/16, 192.168.100.3 . 192.168.1.10/32 } }
  set peer_access { type ipv4_addr . ipv4_addr; flags interval; }
  set masquerade_to { type ipv4_addr; flags interval; elements = { 192.168.0.0/16 } }
  chain input { type filter hook input priority filter; policy accept; iifname "${p}y" jump vpn_to_server; }
  chain prerouting { type filter hook prerouting priority mangle; policy accept; iifname "${p}y" meta mark set meta mark | 0x20000000; }
  chain forward { type filter hook forward priority filter; policy accept; iifname "${p}y" jump vpn_forward; oifname "${p}y" ct state established,related accept; oifname "${p}y" counter drop; }
  chain vpn_forward { ip daddr @deny goto denied; ct direction reply accept; ip daddr 192.168.100.0/24 ip saddr . ip daddr @peer_access accept; ip daddr 192.168.100.0/24 counter drop; ip saddr . ip daddr @access accept; counter drop comment "not in access"; }
  chain vpn_to_server { ip daddr @deny goto denied; ct direction reply accept; ip saddr . ip daddr @access accept; counter drop; }
  chain denied { ip saddr @deny_drops drop; counter drop; }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept; ip saddr 192.168.100.0/24 oifname != "${p}y" ip daddr @masquerade_to masquerade; }
}
T
}
script() { # MODE N
  if [ "$1" = table ]; then
    printf 'table inet wgadm\ndelete table inet wgadm\n'
  else
    printf 'table inet wgadm\nflush table inet wgadm\n'
    printf 'add chain inet wgadm output { type filter hook output priority filter; policy accept; }\n'
    printf 'delete chain inet wgadm output\n'
    for s in "ruleset_digest { type mark; }" "deny { type ipv4_addr; flags interval; }" \
      "deny_drops { type ipv4_addr; counter; }" \
      "access { type ipv4_addr . ipv4_addr; flags interval; }" \
      "peer_access { type ipv4_addr . ipv4_addr; flags interval; }" \
      "masquerade_to { type ipv4_addr; flags interval; }"; do
      printf 'add set inet wgadm %s\nflush set inet wgadm %s\n' "$s" "${s%% *}"
    done
  fi
  body "$2"
}

script table 0 | ip netns exec $R nft -f - || exit 1
ip netns exec $A ping -c 3 -W 2 192.168.1.11 >/dev/null || { echo "no path through the router"; exit 1; }
fail=0
for r in $(seq 1 "$rounds"); do
  for mode in table inplace; do
    ip netns exec $A ping -q -i 0.005 -W 2 192.168.1.11 >"$tmpd/ping.$p" 2>&1 &
    pp=$!
    sleep 0.3
    t0=$(date +%s%N)
    for i in $(seq 1 "$loads"); do
      script $mode "$i" | ip netns exec $R nft -f - || { echo "load $i ($mode) refused"; fail=1; }
    done
    t1=$(date +%s%N)
    sleep 0.3
    kill -INT $pp
    wait $pp
    echo "round $r $mode: $loads loads, $(((t1 - t0) / 1000000 / loads)) ms each; $(grep transmitted "$tmpd/ping.$p")"
  done
done
exit $fail
