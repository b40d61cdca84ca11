# shellcheck shell=bash
# Part of the LXC test rig (sourced by ../lib.sh, which holds the settings, names and small
# helpers): the processes the rig starts, recorded by PID and start time.

# ---- processes the rig starts (recorded by PID and start time, killed by process group) -------

# lxcrig_spawn TAG CMD...: runs CMD in the background in a new session (so it is its own process
# group), output to $LXCRIG_RUN/TAG.log, and records it in $LXCRIG_RUN/pids. Started from a
# subshell, where there is no job control even in an interactive shell: the child is then no
# process group leader, setsid needs no fork, and $! is CMD's PID.
lxcrig_spawn() {
  local tag=$1 pid start
  shift
  pid=$(
    setsid "$@" </dev/null >"$LXCRIG_RUN/$tag.log" 2>&1 &
    echo $!
  )
  start=$(lxcrig_starttime "$pid") || { lxcrig_die "$tag exited at once: $(cat "$LXCRIG_RUN/$tag.log")"; return 1; }
  echo "$pid $start $tag" >>"$LXCRIG_RUN/pids"
}

# The start time of live process PID (field 22 of /proc/PID/stat); fails for a dead or zombie one.
lxcrig_starttime() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  case $1 in Z | X) return 1 ;; esac
  printf '%s\n' "${20}"
}

# Kills what $LXCRIG_RUN/pids lists, if it is still that process (same start time).
lxcrig_kill_recorded() {
  local pid start tag i
  [ -f "$LXCRIG_RUN/pids" ] || return 0
  while read -r pid start tag; do
    [ "$(lxcrig_starttime "$pid" 2>/dev/null)" = "$start" ] || continue
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in 1 2 3 4 5 6 7 8 9 10; do
      [ "$(lxcrig_starttime "$pid" 2>/dev/null)" = "$start" ] || break
      [ "$i" = 10 ] && kill -KILL -- "-$pid" 2>/dev/null
      sleep 0.1
    done
    : "$tag"
  done <"$LXCRIG_RUN/pids"
  rm -f "$LXCRIG_RUN/pids"
}
