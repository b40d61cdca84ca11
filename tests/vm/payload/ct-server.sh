#!/bin/bash
# The server in an unprivileged LXC container on the VM's kernel WireGuard, as on Proxmox
# (issue 12, item 4). The VM stands in for the Proxmox host: it loads the wireguard module and
# the netfilter modules the ruleset needs (the proxmox_ct role's list: a container cannot load
# modules) and runs CT 190 (prepared in the image by tests/vm/ct-rootfs.sh): unprivileged (id map
# 0 -> 100000), nesting (AppArmor's generated profile with allow_nesting, as pct writes it),
# systemd as PID 1, 1 core, 1024 MB, net0 on the management LAN. In the container: wgadm and its
# packaged units, installed where the .deb puts them, `wgadm init`, two peers, `wgadm apply`, the
# units enabled as the wireguard_server role does. Then from the VM's namespaces: clients
# handshake with the container over kernel links, reach the management host and not the DMZ
# host, and a peer whose access list names one host is refused beyond it; every verdict is
# counted on real packets (replies, and nft counters at the receiving hosts). Last, the
# container is stopped and started (a host reboot with onboot) and the tunnel comes back.
#
#   vmbr0 (ct190-net: br-lan 192.168.1.1, the router) -- mgmt ns 192.168.1.10, .11
#     |   \-- dmz0 172.16.10.1 -- dmz ns 172.16.10.5
#   CT 190 eth0 192.168.1.90, eth1 198.51.100.1 -- br-wan -- clients 198.51.100.10, .11
set -euo pipefail
payload=$(cd "$(dirname "$0")" && pwd)
results=${1:-/tmp}
ct=190
lxcpath=/var/lib/lxc
dir=$lxcpath/$ct
map_base=100000
ns_net=ct190-net ns_mgmt=ct190-mgmt ns_dmz=ct190-dmz
clients=(ct190-c0 ct190-c1)
run=/run/ct190
t0=$(date +%s)
# Every line with the seconds since the start: where the time goes under emulation.
say() { echo "ct-server: [+$(($(date +%s) - t0)) s] $*"; }
fail() {
  echo "ct-server: FAIL: $*" >&2
  exit 1
}
ct_state() { lxc-info -P "$lxcpath" -n "$ct" -sH 2>/dev/null || echo ABSENT; }
cleanup() {
  local rc=$? ns
  if [ $rc -ne 0 ] && [ "$(ct_state)" = RUNNING ]; then
    # What the container's services said, for the log of a failed run.
    att journalctl -b -o short-monotonic --no-pager -u wgadm -u wgadm-firewall -u 'wg-quick@*' 2>/dev/null |
      tail -n 60 | sed 's/^/    ct journal: /' >&2 || true
  fi
  [ "$(ct_state)" = ABSENT ] || [ "$(ct_state)" = STOPPED ] || lxc-stop -P "$lxcpath" -n "$ct" -k 2>/dev/null || true
  for ns in "$ns_net" "$ns_mgmt" "$ns_dmz" "${clients[@]}"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$run"
  exit $rc
}
trap cleanup EXIT
# Polls `cmd` every 0.2 s for up to $1 seconds.
poll() {
  local secs=$1
  shift
  local end=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt $end ] || return 1
    sleep 0.2
  done
}
# A command in the container, as its root (lxc-attach, a clean environment).
att() {
  lxc-attach -P "$lxcpath" -n "$ct" --clear-env \
    --set-var PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin -- "$@"
}
booted() {
  local s
  s=$(att systemctl is-system-running 2>/dev/null) || true
  case $s in running | degraded) return 0 ;; esac
  return 1
}
wait_booted() {
  poll 300 booted || fail "CT $ct did not boot: $(att systemctl list-jobs --no-pager 2>&1 | tail -5)"
  # Units the server does not need may fail in a container (the unit checks below are strict).
  if [ "$(att systemctl is-system-running 2>/dev/null)" = degraded ]; then
    say "CT $ct booted degraded; failed units: $(att systemctl --failed --no-legend --plain 2>&1 | awk '{print $1}' | xargs)"
  fi
}

# ---- the Proxmox host's part: modules, the LAN, the DMZ, the WAN ------------------------------

# Exactly what the proxmox_ct role loads and persists on the host.
modprobe -a wireguard nf_tables nft_ct nft_nat nft_chain_nat nft_masq nfnetlink_log nft_log nft_limit
mkdir -p "$run"
chmod 0700 "$run"

ip netns add "$ns_net"
ip -n "$ns_net" link set lo up
ip -n "$ns_net" link add br-lan type bridge
ip -n "$ns_net" link add br-wan type bridge
ip -n "$ns_net" addr add 192.168.1.1/24 dev br-lan
ip -n "$ns_net" link set br-lan up
ip -n "$ns_net" link set br-wan up
ip netns exec "$ns_net" sysctl -qw net.ipv4.ip_forward=1
# Back to the VPN subnet through the container (wgadm's routed mode; masquerade needs none).
ip -n "$ns_net" route add 192.168.100.0/24 via 192.168.1.90 dev br-lan
port() { # NS BRIDGE PORT ADDR...: a namespace with eth0 on a bridge of the net namespace
  local ns=$1 br=$2 p=$3 a
  shift 3
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "$p" netns "$ns_net" type veth peer name eth0 netns "$ns"
  ip -n "$ns_net" link set "$p" master "$br" up
  for a in "$@"; do ip -n "$ns" addr add "$a" dev eth0; done
  ip -n "$ns" link set eth0 up
}
port "$ns_mgmt" br-lan lan-mgmt 192.168.1.10/24 192.168.1.11/24
ip -n "$ns_mgmt" route add default via 192.168.1.1
ip netns add "$ns_dmz"
ip -n "$ns_dmz" link set lo up
ip link add dmz0 netns "$ns_net" type veth peer name eth0 netns "$ns_dmz"
ip -n "$ns_net" addr add 172.16.10.1/24 dev dmz0
ip -n "$ns_net" link set dmz0 up
ip -n "$ns_dmz" addr add 172.16.10.5/24 dev eth0
ip -n "$ns_dmz" link set eth0 up
ip -n "$ns_dmz" route add default via 172.16.10.1
port "${clients[0]}" br-wan wan-c0 198.51.100.10/24
port "${clients[1]}" br-wan wan-c1 198.51.100.11/24
# The receiving hosts count the echo requests that reach them, per destination address.
for ns in "$ns_mgmt" "$ns_dmz"; do
  ip netns exec "$ns" nft -f - <<'NFT'
table inet count {
  chain input {
    type filter hook input priority 0; policy accept;
    ip daddr 192.168.1.10 icmp type echo-request counter
    ip daddr 192.168.1.11 icmp type echo-request counter
    ip daddr 172.16.10.5 icmp type echo-request counter
  }
}
NFT
done
# Echo requests that reached ADDR (in the namespace that has it).
arrived() {
  local ns=$ns_mgmt
  [ "$1" = 172.16.10.5 ] && ns=$ns_dmz
  ip netns exec "$ns" nft list chain inet count input |
    awk -v a="$1" '$0 ~ "daddr " a " " { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }'
}

# ---- CT 190 -------------------------------------------------------------------------------------

[ -d "$dir/rootfs/etc" ] || fail "no CT $ct rootfs in the image (tests/vm/ct-rootfs.sh)"
# LXC makes the veths at every start; their host ends go onto the bridges (vmbr0, and the WAN
# that stands in for the router's port forward of UDP 51820).
for br in lan wan; do
  cat >"$dir/net-up-$br" <<EOF
#!/bin/sh
# LXC net up hook (lxc.hook.version 0): \$5 is the veth's host end.
set -e
ip link set dev "\$5" netns $ns_net
ip -n $ns_net link set dev "\$5" master br-$br up
EOF
  chmod 0755 "$dir/net-up-$br"
done
# AppArmor as on Proxmox when the kernel has it (Debian's does): LXC's generated profile, and
# features: nesting=1 is its allow_nesting (which systemd 257's sandboxed units need).
if [ -d /sys/kernel/security/apparmor ] && command -v apparmor_parser >/dev/null; then
  apparmor="lxc.apparmor.profile = generated
lxc.apparmor.allow_nesting = 1"
  say "AppArmor: generated profile with allow_nesting (features: nesting=1)"
else
  apparmor="lxc.apparmor.profile = unconfined"
  say "AppArmor: not in this kernel, unconfined"
fi
cat >"$dir/config" <<EOF
# CT 190 as pct runs it: arch amd64, hostname wireguard, unprivileged 1, features nesting=1,
# cores 1, memory 1024, swap 512, net0 name=eth0,bridge=vmbr0,ip=192.168.1.90/24,gw=192.168.1.1
lxc.include = /usr/share/lxc/config/common.conf
lxc.include = /usr/share/lxc/config/userns.conf
lxc.arch = linux64
lxc.uts.name = wireguard
lxc.rootfs.path = dir:$dir/rootfs
lxc.idmap = u 0 $map_base 65536
lxc.idmap = g 0 $map_base 65536
lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio
lxc.init.cmd = /sbin/init
lxc.mount.auto =
lxc.mount.auto = proc:mixed sys:mixed cgroup:rw
$apparmor
lxc.signal.halt = SIGRTMIN+3
lxc.autodev = 1
lxc.start.auto = 1
lxc.start.order = 2
lxc.cgroup2.cpu.max = 100000 100000
lxc.cgroup2.memory.max = 1073741824
lxc.cgroup2.memory.swap.max = 536870912
lxc.net.0.type = veth
lxc.net.0.name = eth0
lxc.net.0.veth.pair = veth190i0
lxc.net.0.flags = up
lxc.net.0.hwaddr = 02:16:3e:01:00:5a
lxc.net.0.ipv4.address = 192.168.1.90/24
lxc.net.0.ipv4.gateway = 192.168.1.1
lxc.net.0.script.up = $dir/net-up-lan
lxc.net.1.type = veth
lxc.net.1.name = eth1
lxc.net.1.veth.pair = veth190i1
lxc.net.1.flags = up
lxc.net.1.hwaddr = 02:16:3e:02:00:01
lxc.net.1.ipv4.address = 198.51.100.1/24
lxc.net.1.script.up = $dir/net-up-wan
EOF
start=$(date +%s)
lxc-start -P "$lxcpath" -n "$ct" -d -l INFO -o "$results/ct190.lxc.log" ||
  fail "lxc-start: $(tail -n 20 "$results/ct190.lxc.log")"
wait_booted
say "CT $ct booted (systemd: $(att systemctl is-system-running 2>/dev/null || true)) in $(($(date +%s) - start)) s"
[ "$(att cat /proc/self/uid_map | awk '{print $1, $2, $3}')" = "0 $map_base 65536" ] ||
  fail "the container's uid_map: $(att cat /proc/self/uid_map)"
init_pid=$(lxc-info -P "$lxcpath" -n "$ct" -pH)
[ "$(stat -c %u "/proc/$init_pid")" = "$map_base" ] || fail "the container's init is not uid $map_base"
[ "$(att readlink /proc/1/exe)" = /usr/lib/systemd/systemd ] || fail "PID 1 is $(att readlink /proc/1/exe)"
say "unprivileged (uid_map 0 $map_base 65536, init is host uid $map_base), systemd is PID 1"

# wgadm where its .deb puts it (the VM has no network: no apt in the container).
att sh -c 'cat >/usr/bin/wgadm && chmod 0755 /usr/bin/wgadm' <"$payload/bin/wgadm"
att sh -c 'cat >/lib/systemd/system/wgadm.service' <"$payload/packaging/wgadm.service"
att sh -c 'cat >/lib/systemd/system/wgadm-firewall.service' <"$payload/packaging/wgadm-firewall.service"
att mkdir -p /lib/systemd/system/wg-quick@.service.d
att sh -c 'cat >/lib/systemd/system/wg-quick@.service.d/wgadm.conf' <"$payload/packaging/wg-quick-wgadm.conf"
att systemctl daemon-reload
! att sh -c 'command -v wireguard-go' >/dev/null || fail "wireguard-go is in the container"

# The server: defaults (access 192.168.0.0/16, deny 172.16.10.0/24, masquerade); bob's access
# names one management host.
att wgadm init --endpoint 198.51.100.1 >/dev/null
att wgadm peer add alice >/dev/null
att wgadm peer add bob --access 192.168.1.10/32 >/dev/null
att wgadm apply
# As the wireguard_server role: the firewall at boot, the interface, the daemon.
att systemctl enable --quiet wgadm-firewall.service wg-quick@wg0.service
att systemctl enable --quiet --now wgadm.service
att systemctl is-active --quiet wg-quick@wg0 || fail "wg-quick@wg0 is not active after apply"
att ip -d link show wg0 | grep -qw wireguard || fail "wg0 in the container is no kernel wireguard link"
att nft list table inet wgadm >/dev/null || fail "no table inet wgadm in the container"
poll 60 att systemctl is-active wgadm.service || fail "wgadm.service: $(att systemctl status wgadm 2>&1 | tail -5)"
say "wgadm apply in CT $ct: wg0 is a kernel wireguard link, table inet wgadm loaded, wgadm.service runs"

# Clients route everything into the tunnel: what they reach is the server's firewall's call.
umask 077
i=0
for peer in alice bob; do
  att wgadm peer config "$peer" >"$run/ctwg$i.conf"
  sed -i 's|^AllowedIPs = .*|AllowedIPs = 0.0.0.0/0|' "$run/ctwg$i.conf"
  ip netns exec "${clients[$i]}" wg-quick up "$run/ctwg$i.conf" >/dev/null 2>&1 ||
    fail "wg-quick up for $peer"
  ip -n "${clients[$i]}" -d link show "ctwg$i" | grep -qw wireguard || fail "$peer's link is no kernel link"
  i=$((i + 1))
done
umask 022
# ping_count NS ADDR N: echo replies out of N.
ping_count() {
  { ip netns exec "$1" ping -n -q -c "$3" -i 0.2 -W 2 "$2" 2>/dev/null || true; } |
    awk '/received/ { for (i = 1; i <= NF; i++) if ($(i + 1) ~ /^received/) print $i }'
}
reaches() { [ "$(ping_count "$1" "$2" 1)" = 1 ]; }

poll 60 reaches "${clients[0]}" 192.168.1.10 || fail "alice gets no answer from the management host 192.168.1.10"
say "alice reaches the management host through the container"
# wg show dump, peer lines: key psk endpoint allowed-ips latest-handshake rx tx keepalive.
handshake_of() {
  local key
  key=$(att wgadm --json peer show "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')
  att wg show wg0 dump | awk -v k="$key" '$1 == k { print $5, $6 }'
}
# Each verdict on 5 echo requests: replies at the client, requests counted at the receiver.
expect() { # CLIENT_INDEX PEER ADDR yes|no
  local c=$1 peer=$2 addr=$3 want=$4 before got after
  before=$(arrived "$addr")
  got=$(ping_count "${clients[$c]}" "$addr" 5)
  after=$(arrived "$addr")
  if [ "$want" = yes ]; then
    # A reply is a reply; under emulation one may come late, none at all is a failure.
    [ "${got:-0}" -ge 1 ] && [ $((after - before)) -ge "$got" ] ||
      fail "$peer -> $addr: $got of 5 replies, $((after - before)) requests arrived (want: reached)"
    say "$peer -> $addr: $got of 5 replies, $((after - before)) requests arrived: reached"
  else
    [ "${got:-0}" = 0 ] && [ "$after" = "$before" ] ||
      fail "$peer -> $addr: $got of 5 replies, $((after - before)) requests arrived (want: refused)"
    say "$peer -> $addr: 0 of 5 replies, 0 requests arrived: refused"
  fi
}
expect 0 alice 192.168.1.10 yes
expect 0 alice 192.168.1.11 yes
expect 0 alice 172.16.10.5 no
poll 60 reaches "${clients[1]}" 192.168.1.10 || fail "bob gets no answer from 192.168.1.10 (his access list)"
expect 1 bob 192.168.1.10 yes
expect 1 bob 192.168.1.11 no
expect 1 bob 172.16.10.5 no
for peer in alice bob; do
  read -r hs rx <<<"$(handshake_of "$peer")"
  [ "${hs:-0}" -gt 0 ] && [ "${rx:-0}" -gt 0 ] || fail "$peer: latest handshake ${hs:-none}, rx ${rx:-none} bytes on wg0"
  say "$peer: handshake at $hs, $rx bytes received on the container's wg0"
done
poll 30 sh -c "lxc-attach -P $lxcpath -n $ct -- journalctl -u wgadm -o cat | grep -q 'event=peer_connected.*peer=alice'" ||
  fail "the daemon (hardened unit in the container) logged no peer_connected for alice"
say "the daemon in the container logged alice's connect"

# A host reboot with onboot: a clean stop and a start. The units bring the firewall and wg0 back.
stop=$(date +%s)
lxc-stop -P "$lxcpath" -n "$ct" -t 120 || fail "lxc-stop"
lxc-start -P "$lxcpath" -n "$ct" -d -l INFO -o "$results/ct190.lxc.log" || fail "lxc-start again"
wait_booted
att systemctl is-active --quiet wgadm-firewall.service || fail "wgadm-firewall.service after the restart"
att systemctl is-active --quiet wg-quick@wg0 || fail "wg-quick@wg0 after the restart"
att ip -d link show wg0 | grep -qw wireguard || fail "wg0 after the restart is no kernel link"
poll 180 reaches "${clients[0]}" 192.168.1.10 || fail "alice did not come back after the container's restart"
say "after a stop and start of CT $ct (a host reboot) alice is back in $(($(date +%s) - stop)) s"
expect 0 alice 172.16.10.5 no
say "passed"
