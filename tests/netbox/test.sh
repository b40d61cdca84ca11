#!/usr/bin/env bash
# wgadm against a real NetBox: sets it up (tests/netbox/setup.sh: installs, migrates or clones
# the cached database, starts PostgreSQL, Redis and NetBox on 127.0.0.1), runs the Rust tests
# in crates/wgadm/tests/netbox.rs, and stops what it started by PID, also when a test fails.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
CACHE=${WGADM_TEST_CACHE:-/var/cache/wgadm-test}
CARGO=${CARGO:-cargo}

t0=$EPOCHREALTIME
seconds() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

trap 'bash "$here/setup.sh" stop' EXIT
bash "$here/setup.sh"
setup_s=$(seconds "$t0")

set -a
# shellcheck disable=SC1091
. "$CACHE/run/env"
set +a

t1=$EPOCHREALTIME
cd "$root"
"$CARGO" test --locked -p wgadm --test netbox -- --include-ignored --test-threads=1 --nocapture

# The Ansible collection runs the sync from the controller (role netbox_sync, playbook
# wgadm.vpn.netbox): changed the first time, not the second, nothing in check mode.
t2=$EPOCHREALTIME
"$CARGO" build --locked -p wgadm >/dev/null 2>&1
work=$(mktemp -d)
trap 'rm -rf "$work"; bash "$here/setup.sh" stop' EXIT
export PATH="$root/target/debug:$PATH" ANSIBLE_NOCOLOR=1 ANSIBLE_LOCAL_TEMP="$work/tmp"
export ANSIBLE_COLLECTIONS_PATH="$work/collections"
ansible-galaxy collection build "$root/ansible" --output-path "$work" --force >/dev/null
ansible-galaxy collection install "$work"/wgadm-vpn-*.tar.gz -p "$work/collections" --force >/dev/null
inv=$work/inventory
mkdir -p "$inv/group_vars"
printf '[wireguard]\nctl ansible_connection=local ansible_python_interpreter=%s\n' "$(command -v python3)" >"$inv/hosts.ini"
cat >"$inv/group_vars/wireguard.yml" <<YML
netbox_sync_url: $WGADM_TEST_NETBOX_URL
netbox_sync_token: "{{ lookup('ansible.builtin.file', '$WGADM_TEST_NETBOX_TOKEN_FILE') }}"
netbox_sync_vm_name: wgadm-ansible-$$
netbox_sync_cluster: wgadm-ansible-$$
YML
WGADM_STATE=$inv/wireguard wgadm init --endpoint vpn.example.com --subnet 10.201.0.0/24 >/dev/null
WGADM_STATE=$inv/wireguard wgadm peer add alice >/dev/null
# The role finds wgadm on PATH: a wrapper in front of it records, from /proc, the environment
# and command line wgadm really gets and the mode of the token file it is given, then execs
# the real binary (same PID, same environment).
mkdir -p "$work/bin"
cat >"$work/bin/wgadm" <<SH
#!/usr/bin/env bash
{ tr '\\0' '\\n' </proc/\$\$/environ; tr '\\0' '\\n' </proc/\$\$/cmdline; } >>"$work/seen"
prev=
for a in "\$@"; do
  [ "\$prev" = --netbox-token-file ] && echo "token-file \$a \$(stat -c %a "\$a")" >>"$work/token-files"
  prev=\$a
done
exec "$root/target/debug/wgadm" "\$@"
SH
chmod 755 "$work/bin/wgadm"
export PATH="$work/bin:$PATH"
changed() { ansible-playbook -i "$inv/hosts.ini" wgadm.vpn.netbox "$@" | grep -oE 'changed=[0-9]+' | head -1 | cut -d= -f2; }
first=$(changed)
second=$(changed)
check_run=$(changed --check)
echo "netbox-test: ansible wgadm.vpn.netbox: changed=$first, then changed=$second, --check changed=$check_run"
[ "$first" = 1 ] && [ "$second" = 0 ] && [ "$check_run" = 0 ] || { echo "netbox-test: FAIL the netbox playbook is not idempotent" >&2; exit 1; }
# The token: never in wgadm's environment or command line; given as a 0600 file, gone afterwards.
runs=$(grep -c '^token-file ' "$work/token-files" || true)
[ "$runs" = 3 ] || { echo "netbox-test: FAIL expected 3 syncs with --netbox-token-file, saw $runs" >&2; exit 1; }
if grep -qF -f "$WGADM_TEST_NETBOX_TOKEN_FILE" "$work/seen"; then
  echo "netbox-test: FAIL the NetBox token was in wgadm's environment or command line" >&2; exit 1
fi
if grep -q '^WGADM_NETBOX_TOKEN=\|^NETBOX_TOKEN=' "$work/seen"; then
  echo "netbox-test: FAIL a token variable was in wgadm's environment" >&2; exit 1
fi
while read -r _ file mode; do
  [ "$mode" = 600 ] || { echo "netbox-test: FAIL the token file $file had mode $mode" >&2; exit 1; }
  [ ! -e "$file" ] || { echo "netbox-test: FAIL the token file $file was left behind" >&2; exit 1; }
done <"$work/token-files"
echo "netbox-test: ansible: the token reached wgadm $runs times as a 0600 file, removed after; not in its environ or cmdline"
echo "netbox-test: ansible $(seconds "$t2") s"

echo "netbox-test: NetBox $WGADM_TEST_NETBOX_VERSION: setup ${setup_s} s, tests $(seconds "$t1") s, total $(seconds "$t0") s" >&2
