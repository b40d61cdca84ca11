# shellcheck shell=bash
# Part of the LXC test rig (sourced by ../lib.sh, which holds the settings, names and small
# helpers): what a rig leaves on the machine, taking it down, reaping rigs whose owner is gone.

# What a rig NAME leaves on the machine (empty when nothing).
lxcrig_footprint() {
  local pid start tag
  lxcrig_names "$1" || return 1
  ip netns list 2>/dev/null | awk '{print $1}' | grep "^$LXCRIG_NS_PREFIX" | sed 's/^/netns /' || true
  lxc-ls -P "$LXCRIG_LXCPATH" -1 2>/dev/null | grep -x "$LXCRIG_CT" | sed 's/^/container /' || true
  lxcrig_rootfs_mounts | sed 's/^/mount /'
  [ -e "$(lxcrig_ctdir)" ] && echo "dir $(lxcrig_ctdir)"
  [ -e "$LXCRIG_RUN" ] && echo "dir $LXCRIG_RUN"
  if [ -f "$LXCRIG_RUN/pids" ]; then
    while read -r pid start tag; do
      [ "$(lxcrig_starttime "$pid" 2>/dev/null)" = "$start" ] && echo "process $pid ($tag)"
    done <"$LXCRIG_RUN/pids"
  fi
  # Any process still inside one of the rig's namespaces (e.g. started by a test).
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$LXCRIG_NS_PREFIX"); do
    ip netns pids "$ns" 2>/dev/null | sed "s/^/process in $ns: /"
  done
  return 0
}

lxcrig_rootfs_mounts() {
  awk -v d="$(lxcrig_ctdir)/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts
}

lxcrig_umount_rootfs() {
  local m
  for m in $(lxcrig_rootfs_mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
}

# down.sh NAME: everything of rig NAME, whatever state it is in. Safe to call twice.
lxcrig_down() {
  local ns pid
  lxcrig_need_root
  lxcrig_names "$1" || return 1
  if [ -e "$(lxcrig_ctdir)/config" ]; then
    if [ "$(lxcrig_state)" != STOPPED ]; then
      lxc-stop -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" -k 2>/dev/null || true
    fi
  fi
  lxcrig_umount_rootfs
  if [ -e "$(lxcrig_ctdir)/config" ]; then
    lxc-destroy -P "$LXCRIG_LXCPATH" -n "$LXCRIG_CT" >/dev/null 2>&1 || true
  fi
  rm -rf "$(lxcrig_ctdir)"
  [ -d "$LXCRIG_RUN" ] && lxcrig_kill_recorded
  # Processes tests left in the rig's namespaces (found by namespace, killed by PID): TERM first,
  # so that e.g. wireguard-go removes its socket, then KILL.
  local nss pids i
  nss=$(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$LXCRIG_NS_PREFIX" || true)
  for i in 1 2 3 4 5 6 7 8 9 10 11; do
    pids=$(for ns in $nss; do ip netns pids "$ns" 2>/dev/null; done)
    [ -n "$pids" ] || break
    for pid in $pids; do
      if [ "$i" -lt 11 ]; then kill -TERM "$pid" 2>/dev/null || true; else kill -KILL "$pid" 2>/dev/null || true; fi
    done
    sleep 0.1
  done
  for ns in $nss; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$LXCRIG_RUN"
  return 0
}

# Every rig on the machine, by name (from temp dirs, containers and namespaces).
lxcrig_list() {
  {
    find "$LXCRIG_RUNBASE" -maxdepth 1 -name 'wgadm-lxc-*' -type d -printf '%f\n' 2>/dev/null |
      sed 's/^wgadm-lxc-//'
    lxc-ls -P "$LXCRIG_LXCPATH" -1 2>/dev/null | grep '^wgadm-lxc-' | sed 's/^wgadm-lxc-//'
    ip netns list 2>/dev/null | awk '{print $1}' | grep '^wgadm-lxc-.*-net$' |
      sed 's/^wgadm-lxc-//; s/-net$//'
  } | sort -u
}

# Whether rig NAME's owner still runs (a rig without an owner file younger than a minute is one
# being made right now).
lxcrig_owner_alive() {
  local pid start
  lxcrig_names "$1" || return 1
  if [ ! -f "$LXCRIG_RUN/owner" ]; then
    [ -d "$LXCRIG_RUN" ] && [ -n "$(find "$LXCRIG_RUN" -maxdepth 0 -mmin -1)" ]
    return
  fi
  read -r pid start <"$LXCRIG_RUN/owner" || true
  [ -n "${start:-}" ] && [ "$(lxcrig_starttime "$pid" 2>/dev/null)" = "$start" ]
}

# down.sh --stale: removes the rigs whose owner is gone (killed test runs). Prints their names.
lxcrig_down_stale() {
  local n
  for n in $(lxcrig_list); do
    lxcrig_owner_alive "$n" && continue
    lxcrig_log "removing stale rig '$n'"
    lxcrig_down "$n"
  done
}
