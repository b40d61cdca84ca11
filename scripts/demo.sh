#!/usr/bin/env bash
# The main job, end to end, on this machine: a WireGuard server managed by wgadm and two clients
# that use, unchanged, the configs wgadm made for them. Everything runs in network namespaces this
# script creates (wireguard-go stands in for the kernel module) and is removed at the end, also
# when a step fails. Nothing is sent outside those namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }
wgadm=$(realpath "${WGADM:-target/release/wgadm}")
[ -x "$wgadm" ] || cargo build --release --locked

id=$$
work=$(mktemp -d)
ns_wan=wgdemo-$id-wan ns_srv=wgdemo-$id-srv ns_mgmt=wgdemo-$id-mgmt ns_dmz=wgdemo-$id-dmz
clients=(alice bob)
namespaces=("$ns_wan" "$ns_srv" "$ns_mgmt" "$ns_dmz")
for c in "${clients[@]}"; do namespaces+=("wgdemo-$id-$c"); done

cleanup() {
  # wireguard-go processes started by this demo, by the PIDs the wrapper recorded.
  for f in "$work"/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# wg-quick starts this instead of wireguard-go: the same program in the foreground, so its PID is
# known and cleanup can end exactly it.
cat >"$work/wireguard-go" <<WRAP
#!/bin/sh
wireguard-go -f "\$1" >"$work/\$1.log" 2>&1 &
echo \$! >"$work/\$1.pid"
i=0; while [ ! -S "/var/run/wireguard/\$1.sock" ] && [ \$i -lt 500 ]; do sleep 0.01; i=\$((i+1)); done
WRAP
chmod +x "$work/wireguard-go"
export WG_QUICK_USERSPACE_IMPLEMENTATION=$work/wireguard-go
export WGADM_STATE=$work/state WGADM_CONFIG_DIR=$work/wireguard

step() { printf '\n\033[1m%s$ %s\033[0m\n' "${where:+[$where] }" "$*"; "$@"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
hide_keys() { sed -E 's/^(PrivateKey|PresharedKey) = .*/\1 = <secret: shown only to its owner>/'; }

echo "demo: building the lab (a WAN bridge, the server, a management host, a DMZ host, ${#clients[@]} clients)"
for ns in "${namespaces[@]}"; do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
in_ns "$ns_wan" ip link add br0 type bridge
in_ns "$ns_wan" ip link set br0 up
attach() { # namespace address: a veth from the namespace into the WAN bridge
  ip link add "wd$id$2" type veth peer name eth0 netns "$1"
  ip link set "wd$id$2" netns "$ns_wan"
  in_ns "$ns_wan" ip link set "wd$id$2" master br0 up
  in_ns "$1" ip addr add "198.51.100.$2/24" dev eth0
  in_ns "$1" ip link set eth0 up
}
attach "$ns_srv" 1
for i in "${!clients[@]}"; do attach "wgdemo-$id-${clients[$i]}" $((11 + i)); done
ip link add eth1 netns "$ns_srv" type veth peer name eth0 netns "$ns_mgmt"
in_ns "$ns_srv" ip addr add 192.168.1.1/24 dev eth1
in_ns "$ns_srv" ip link set eth1 up
in_ns "$ns_mgmt" ip addr add 192.168.1.10/24 dev eth0
in_ns "$ns_mgmt" ip link set eth0 up
in_ns "$ns_mgmt" ip route add default via 192.168.1.1
ip link add eth2 netns "$ns_srv" type veth peer name eth0 netns "$ns_dmz"
in_ns "$ns_srv" ip addr add 172.16.10.1/24 dev eth2
in_ns "$ns_srv" ip link set eth2 up
in_ns "$ns_dmz" ip addr add 172.16.10.5/24 dev eth0
in_ns "$ns_dmz" ip link set eth0 up
in_ns "$ns_dmz" ip route add default via 172.16.10.1

iface=wgd${id}s
step "$wgadm" init --endpoint 198.51.100.1 --interface "$iface"
step "$wgadm" peer add alice
step "$wgadm" peer add bob --preshared-key
where=server step ip netns exec "$ns_srv" "$wgadm" apply
for i in "${!clients[@]}"; do
  c=${clients[$i]}
  conf=$work/wgd${id}${i}.conf
  "$wgadm" peer config "$c" >"$conf"
  chmod 600 "$conf"
  where=$c step ip netns exec "wgdemo-$id-$c" wg-quick up "$conf" 2>/dev/null
done
printf '\n\033[1m%s\033[0m\n' "alice's config, as wgadm made it (secrets masked here):"
hide_keys <"$work/wgd${id}0.conf"
for c in "${clients[@]}"; do
  where=$c step ip netns exec "wgdemo-$id-$c" ping -c 3 -i 0.2 -W 2 192.168.100.1
  where=$c step ip netns exec "wgdemo-$id-$c" ping -c 3 -i 0.2 -W 2 192.168.1.10
done
printf '\n\033[1m%s\033[0m\n' "bob edits his config to send everything through the tunnel; the server still decides:"
conf=$work/wgd${id}1.conf
where=bob step ip netns exec "wgdemo-$id-bob" wg-quick down "$conf" 2>/dev/null
sed -i 's|^AllowedIPs = .*|AllowedIPs = 0.0.0.0/0|' "$conf"
where=bob step ip netns exec "wgdemo-$id-bob" wg-quick up "$conf" 2>/dev/null
where=bob step ip netns exec "wgdemo-$id-bob" ping -c 3 -i 0.2 -W 1 172.16.10.5 || echo "(the DMZ is never reachable from the VPN)"
where=server step ip netns exec "$ns_srv" "$wgadm" status
step "$wgadm" peer disable bob
where=server step ip netns exec "$ns_srv" "$wgadm" apply
where=bob step ip netns exec "wgdemo-$id-bob" ping -c 2 -i 0.2 -W 1 192.168.100.1 || echo "(bob is cut off, as asked)"
where=alice step ip netns exec "wgdemo-$id-alice" ping -c 2 -i 0.2 -W 2 192.168.100.1
step "$wgadm" peer add phone
printf '\n\033[1m$ %s\033[0m\n' "$wgadm peer qr phone"
"$wgadm" peer qr phone
for i in "${!clients[@]}"; do
  where=${clients[$i]} step ip netns exec "wgdemo-$id-${clients[$i]}" wg-quick down "$work/wgd${id}${i}.conf" 2>/dev/null
done
echo
echo "demo: done; the lab is removed"
