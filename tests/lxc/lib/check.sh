# shellcheck shell=bash
# Part of the LXC test rig (sourced by ../lib.sh, which holds the settings, names and small
# helpers): the check helper of smoke.sh and failclosed.sh.

# lxcrig_check WHAT CMD...: runs CMD (with -e, in a subshell), counts it in the caller's `passed`
# or `failed` and prints "ok   WHAT" or "FAIL WHAT" with the last 20 lines of its output (kept in
# the caller's `out_file`). Shared by smoke.sh and failclosed.sh.
lxcrig_check() {
  local what=$1 rc
  shift
  set +e
  (
    set -e
    "$@"
  ) >"$out_file" 2>&1
  rc=$?
  set -e
  if [ "$rc" = 0 ]; then
    passed=$((passed + 1))
    printf 'ok   %s\n' "$what"
  else
    failed=$((failed + 1))
    printf 'FAIL %s\n' "$what"
    tail -n 20 "$out_file" | sed 's/^/     | /'
  fi
}
