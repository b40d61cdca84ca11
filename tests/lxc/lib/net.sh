# shellcheck shell=bash
# Part of the LXC test rig (sourced by ../lib.sh, which holds the settings, names and small
# helpers): the lab's network namespaces, the clients and the apt relay.

# ---- the lab's network namespaces -------------------------------------------------------------

# lxcrig_ns_port NS BRIDGE PORTNAME ADDR/LEN... : a namespace with eth0 on a bridge in the net ns.
lxcrig_ns_port() {
  local ns=$1 bridge=$2 port=$3 a
  shift 3
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "$port" netns "$LXCRIG_NS_NET" type veth peer name eth0 netns "$ns"
  ip -n "$LXCRIG_NS_NET" link set "$port" master "$bridge" up
  for a in "$@"; do ip -n "$ns" addr add "$a" dev eth0; done
  ip -n "$ns" link set eth0 up
}

lxcrig_net_up() {
  local i ns
  ip netns add "$LXCRIG_NS_NET"
  ip -n "$LXCRIG_NS_NET" link set lo up
  ip -n "$LXCRIG_NS_NET" link add br-lan type bridge
  ip -n "$LXCRIG_NS_NET" link add br-wan type bridge
  ip -n "$LXCRIG_NS_NET" addr add "$LXCRIG_ROUTER/24" dev br-lan
  ip -n "$LXCRIG_NS_NET" link set br-lan up
  ip -n "$LXCRIG_NS_NET" link set br-wan up
  # The router: between the management LAN and the DMZ, and back to the VPN subnet.
  ip netns exec "$LXCRIG_NS_NET" sysctl -qw net.ipv4.ip_forward=1
  ip netns add "$LXCRIG_NS_DMZ"
  ip link add dmz0 netns "$LXCRIG_NS_NET" type veth peer name eth0 netns "$LXCRIG_NS_DMZ"
  ip -n "$LXCRIG_NS_NET" addr add "$LXCRIG_DMZ_ROUTER/24" dev dmz0
  ip -n "$LXCRIG_NS_NET" link set dmz0 up
  ip -n "$LXCRIG_NS_DMZ" link set lo up
  ip -n "$LXCRIG_NS_DMZ" addr add "$LXCRIG_DMZ_HOST/24" dev eth0
  ip -n "$LXCRIG_NS_DMZ" link set eth0 up
  ip -n "$LXCRIG_NS_DMZ" route add default via "$LXCRIG_DMZ_ROUTER"
  ip -n "$LXCRIG_NS_NET" route add "$LXCRIG_VPN_SUBNET" via "$LXCRIG_CT_MGMT" dev br-lan

  lxcrig_ns_port "$LXCRIG_NS_CTL" br-lan lan-ctl "$LXCRIG_CONTROLLER/24"
  lxcrig_ns_port "$LXCRIG_NS_MGMT" br-lan lan-mgmt "${LXCRIG_MGMT_HOSTS[0]}/24" "${LXCRIG_MGMT_HOSTS[1]}/24"
  ip -n "$LXCRIG_NS_MGMT" route add default via "$LXCRIG_ROUTER"
  for ((i = 0; i < LXCRIG_CLIENTS; i++)); do
    ns=$(lxcrig_client_ns "$i")
    lxcrig_ns_port "$ns" br-wan "wan-c$i" "$(lxcrig_client_addr "$i")/24"
  done
}

# lxcrig_add_client NAME I: one more client namespace on the wan (after up).
lxcrig_add_client() {
  lxcrig_names "$1" || return 1
  lxcrig_ns_port "$(lxcrig_client_ns "$2")" br-wan "wan-c$2" "$(lxcrig_client_addr "$2")/24"
}

# The apt relay: 192.168.1.1:PORT in the lab -> UNIX socket -> the host's mirror. Only that one
# host and port are reachable; no forwarding or NAT on the host.
lxcrig_relay_up() {
  local mirror scheme host port
  mirror=$(lxcrig_host_mirror)
  read -r scheme host port < <(lxcrig_uri_parts "$mirror")
  : "$scheme"
  lxcrig_spawn relay-host socat "UNIX-LISTEN:$LXCRIG_RUN/apt.sock,fork,mode=600" "TCP:$host:$port"
  local i
  for i in $(seq 50); do
    [ -S "$LXCRIG_RUN/apt.sock" ] && break
    sleep 0.02
  done
  lxcrig_spawn relay-lab ip netns exec "$LXCRIG_NS_NET" socat \
    "TCP-LISTEN:$port,bind=$LXCRIG_ROUTER,reuseaddr,fork" "UNIX-CONNECT:$LXCRIG_RUN/apt.sock"
  LXCRIG_MIRROR_HOST=$host
}
