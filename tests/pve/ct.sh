#!/usr/bin/env bash
# The PVE stand-in's hands: real LXC through tests/lxc's rig library. One container per rig
# (PVE_STANDIN_RIG), named wgadm-lxc-RIG, in the rig's namespaces; the lab itself (namespaces,
# bridges vmbr0/vmbr1, apt relay) is made by `ct.sh lab RIG` before the stand-in starts.
#   ct.sh lab RIG                  the rig's network without a container; bridges vmbr0 (LAN), vmbr1 (wan)
#   ct.sh template DEST            "download" the Debian 13 template: the rig's cached rootfs
#   ct.sh create VMID TMPL SIZE_GB unpack TMPL as the unprivileged container; stdin: ssh-public-keys
#   ct.sh start VMID               stdin: the LXC settings the stand-in translated from the PVE config
#   ct.sh limits VMID              stdin: as start; applies the cgroup limits to the running container
#   ct.sh shutdown VMID TIMEOUT | stop VMID | state VMID | destroy VMID
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lxc/lib.sh
. "$here/../lxc/lib.sh"

cmd=$1
shift
if [ "$cmd" = lab ]; then
  lxcrig_need_root
  lxcrig_names "$1"
  mkdir -p "$LXCRIG_RUNBASE"
  mkdir -m 0700 "$LXCRIG_RUN"
  owner=${WGADM_LXC_OWNER:-$PPID}
  echo "$owner $(lxcrig_starttime "$owner" || echo 0)" >"$LXCRIG_RUN/owner"
  ssh-keygen -q -t ed25519 -N '' -C "wgadm-pve-$LXCRIG_NAME" -f "$LXCRIG_RUN/id_ed25519"
  lxcrig_net_up
  # Proxmox's names for the bridges.
  for pair in br-lan:vmbr0 br-wan:vmbr1; do
    ip -n "$LXCRIG_NS_NET" link set "${pair%%:*}" down
    ip -n "$LXCRIG_NS_NET" link set "${pair%%:*}" name "${pair##*:}"
    ip -n "$LXCRIG_NS_NET" link set "${pair##*:}" up
  done
  ip -n "$LXCRIG_NS_NET" route replace "$LXCRIG_VPN_SUBNET" via "$LXCRIG_CT_MGMT" dev vmbr0
  lxcrig_relay_up
  lxcrig_write_env
  echo "export WGADM_LXC_MIRROR_HOST=$LXCRIG_MIRROR_HOST" >>"$LXCRIG_RUN/env"
  exit 0
fi

lxcrig_names "${PVE_STANDIN_RIG:?}"
dir=$(lxcrig_ctdir)
vmid_file="$LXCRIG_RUN/standin-vmid"

case $cmd in
  template)
    tarball=$(lxcrig_rootfs_tarball)
    [ -s "$tarball" ] || lxcrig_setup >&2
    cp "$tarball" "$1.tmp"
    mv "$1.tmp" "$1"
    ;;
  create)
    vmid=$1 tmpl=$2 size=$3
    if [ -e "$vmid_file" ] && [ "$(cat "$vmid_file")" != "$vmid" ]; then
      echo "the stand-in's rig holds one container (CT $(cat "$vmid_file") exists)" >&2
      exit 1
    fi
    echo "$vmid" >"$vmid_file"
    # The apt relay's host name in /etc/hosts (lxcrig_make_rootfs writes it).
    LXCRIG_MIRROR_HOST=$(sed -n 's/^export WGADM_LXC_MIRROR_HOST=//p' "$LXCRIG_RUN/env")
    LXCRIG_DISK=${size%.*}G
    lxcrig_rootfs_tarball() { echo "$tmpl"; }
    lxcrig_make_rootfs
    keys=$(cat)
    if [ -n "$keys" ]; then
      printf '%s\n' "$keys" | lxcrig_ct_write root/.ssh/authorized_keys 0600
    else
      rm -f "$dir/rootfs/root/.ssh/authorized_keys"
    fi
    ;;
  start)
    frag=$(cat)
    hostname=$(sed -n 's/^lxc.uts.name = //p' <<<"$frag")
    echo "$hostname" | lxcrig_ct_write etc/hostname 0644
    cg=$(lxcrig_cgroup_prefix)
    {
      cat <<EOF
lxc.include = /usr/share/lxc/config/common.conf
lxc.include = /usr/share/lxc/config/userns.conf
lxc.arch = linux64
lxc.rootfs.path = dir:$dir/rootfs
# unprivileged: 1
lxc.idmap = u 0 $LXCRIG_MAP_BASE $LXCRIG_MAP_SIZE
lxc.idmap = g 0 $LXCRIG_MAP_BASE $LXCRIG_MAP_SIZE
lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio
lxc.init.cmd = /sbin/init systemd.unified_cgroup_hierarchy=1
lxc.mount.auto =
lxc.apparmor.profile = unconfined
lxc.signal.halt = SIGRTMIN+3
lxc.autodev = 1
EOF
      while IFS= read -r line; do
        case $line in
          "@DEV@ "*)
            read -r _ key path <<<"$line"
            [ -c "$path" ] || { echo "device '$path' does not exist" >&2; exit 1; }
            mkdir -p "$dir/passthrough"
            node="$dir/passthrough/$key"
            rm -f "$node"
            mknod -m "$(stat -c %a "$path")" "$node" c "$((0x$(stat -c %t "$path")))" "$((0x$(stat -c %T "$path")))"
            chown "$LXCRIG_MAP_BASE:$LXCRIG_MAP_BASE" "$node"
            echo "lxc.$cg.devices.allow = c $((0x$(stat -c %t "$path"))):$((0x$(stat -c %T "$path"))) rwm"
            echo "lxc.mount.entry = $node ${path#/} none bind,create=file 0 0"
            ;;
          *) printf '%s\n' "${line//@CTDIR@/$dir}" ;;
        esac
      done <<<"$frag"
    } >"$dir/config.new"
    cat >"$dir/net-up" <<EOF
#!/bin/sh
# LXC net up hook: \$1 is the bridge (from the PVE config), \$6 the veth's host end.
set -e
ip -n "$LXCRIG_NS_NET" link show dev "\$1" >/dev/null 2>&1 || { echo "bridge '\$1' does not exist" >&2; exit 1; }
ip link set dev "\$6" netns "$LXCRIG_NS_NET"
ip -n "$LXCRIG_NS_NET" link set dev "\$6" master "\$1" up
EOF
    chmod 0755 "$dir/net-up"
    mv "$dir/config.new" "$dir/config"
    lxc-start -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -d -l INFO -o "$LXCRIG_RUN/lxc.log" ||
      { tail -n 5 "$LXCRIG_RUN/lxc.log" >&2; exit 1; }
    lxc-wait -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -s RUNNING -t 30
    ;;
  limits)
    frag=$(cat)
    while read -r key _ value; do
      lxc-cgroup -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" "${key#lxc.cgroup*.}" "$value"
    done < <(grep -E '^lxc\.cgroup2?\.(cpu|memory)\.' <<<"$frag")
    ;;
  state) lxcrig_state ;;
  shutdown) lxc-stop -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -t "$2" ;;
  stop) lxc-stop -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -k ;;
  destroy)
    lxcrig_umount_rootfs
    rm -rf "$dir" "$vmid_file"
    ;;
  *)
    echo "ct.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac
