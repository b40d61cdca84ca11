#!/usr/bin/env bash
# The main job, end to end, on this machine: a WireGuard server managed by wgadm and two clients
# that use, unchanged, the configs wgadm made for them. Everything runs in the project's lab
# (`wgadm-lab run`, crates/lab: network namespaces, wireguard-go standing in for the kernel
# module), which is removed at the end, also when a step fails. Nothing is sent outside it.
set -euo pipefail
self=$(realpath "$0") # run again inside the lab, from the repository's root
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }
if [ -z "${LAB_NS_SERVER:-}" ]; then
  lab=${WGADM_LAB:-target/release/wgadm-lab}
  [ -x "${WGADM:-target/release/wgadm}" ] && [ -x "$lab" ] || cargo build --release --locked
  echo "demo: building the lab (a WAN bridge, the server, management hosts, a DMZ host, 2 clients)"
  exec "$(realpath "$lab")" run --clients 2 -- bash "$self" "$@"
fi
# From here on inside the lab: its names are in LAB_* (crates/lab/src/lib.rs, Lab::shell_env),
# and wg-quick starts wireguard-go through the lab's wrapper, so the lab ends it.
wgadm=$(realpath "${WGADM:-target/release/wgadm}")
work=$LAB_DIR/demo # in the lab's 0700 directory: client configs hold private keys
mkdir -p "$work"
ns_srv=$LAB_NS_SERVER
clients=(alice bob)
read -r -a client_ns <<<"$LAB_NS_CLIENTS"
export WGADM_STATE=$work/state WGADM_CONFIG_DIR=$work/wireguard

step() { printf '\n\033[1m%s$ %s\033[0m\n' "${where:+[$where] }" "$*"; "$@"; }
hide_keys() { sed -E 's/^(PrivateKey|PresharedKey) = .*/\1 = <secret: shown only to its owner>/'; }

iface=${LAB_WG_PREFIX}s
step "$wgadm" init --endpoint "$LAB_SERVER_WAN" --interface "$iface"
step "$wgadm" peer add alice
step "$wgadm" peer add bob --preshared-key
where=server step ip netns exec "$ns_srv" "$wgadm" apply
for i in "${!clients[@]}"; do
  c=${clients[$i]}
  conf=$work/${LAB_WG_PREFIX}c$i.conf
  "$wgadm" peer config "$c" >"$conf"
  chmod 600 "$conf"
  where=$c step ip netns exec "${client_ns[$i]}" wg-quick up "$conf" 2>/dev/null
done
printf '\n\033[1m%s\033[0m\n' "alice's config, as wgadm made it (secrets masked here):"
hide_keys <"$work/${LAB_WG_PREFIX}c0.conf"
for i in "${!clients[@]}"; do
  c=${clients[$i]}
  where=$c step ip netns exec "${client_ns[$i]}" ping -c 3 -i 0.2 -W 2 192.168.100.1
  where=$c step ip netns exec "${client_ns[$i]}" ping -c 3 -i 0.2 -W 2 "${LAB_MGMT_HOSTS%% *}"
done
printf '\n\033[1m%s\033[0m\n' "bob edits his config to send everything through the tunnel; the server still decides:"
conf=$work/${LAB_WG_PREFIX}c1.conf
where=bob step ip netns exec "${client_ns[1]}" wg-quick down "$conf" 2>/dev/null
sed -i 's|^AllowedIPs = .*|AllowedIPs = 0.0.0.0/0|' "$conf"
where=bob step ip netns exec "${client_ns[1]}" wg-quick up "$conf" 2>/dev/null
where=bob step ip netns exec "${client_ns[1]}" ping -c 3 -i 0.2 -W 1 "$LAB_DMZ_HOST" || echo "(the DMZ is never reachable from the VPN)"
where=server step ip netns exec "$ns_srv" "$wgadm" status
step "$wgadm" peer disable bob
where=server step ip netns exec "$ns_srv" "$wgadm" apply
where=bob step ip netns exec "${client_ns[1]}" ping -c 2 -i 0.2 -W 1 192.168.100.1 || echo "(bob is cut off, as asked)"
where=alice step ip netns exec "${client_ns[0]}" ping -c 2 -i 0.2 -W 2 192.168.100.1
step "$wgadm" peer add phone
printf '\n\033[1m$ %s\033[0m\n' "$wgadm peer qr phone"
"$wgadm" peer qr phone
for i in "${!clients[@]}"; do
  where=${clients[$i]} step ip netns exec "${client_ns[$i]}" wg-quick down "$work/${LAB_WG_PREFIX}c$i.conf" 2>/dev/null
done
echo
echo "demo: done; wgadm-lab removes the lab now"
