#!/usr/bin/env bash
# Proxmox end to end (issue 12): `ansible-playbook wgadm.vpn.site` from an empty "Proxmox host"
# to a working VPN, against the PVE API stand-in (tests/pve/standin.py: PVE 9's schema, API
# tokens, HTTPS with its own CA, containers made by real LXC), twice; --check fresh and
# converged; a rebuilt wgadm; a removed peer. The host side of Proxmox is this machine: the
# role persists the kernel modules into a sandbox directory (never /etc/modules-load.d here)
# and modprobes the netfilter ones (no wireguard module here: the server runs wireguard-go,
# with dev0 /dev/net/tun, so the role does not load it).
# Ends with `pve: N passed, M failed`; exits non-zero on any failure. Cleans up on exit.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
[ "$(id -u)" = 0 ] || { echo "pve test: needs root (LXC, namespaces)" >&2; exit 1; }

name=pve$$
work=$(mktemp -d /tmp/wgadm-pve-XXXXXX)
chmod 700 "$work"
passed=0 failed=0
standin_pid=""
rig_up=0

cleanup() {
  # The container's LXC command socket lives in the controller's network namespace (where the
  # stand-in started it): stop it from there, then the stand-in, then the rig.
  [ "$rig_up" = 1 ] && ip netns exec "wgadm-lxc-$name-ctl" lxc-stop -P /var/lib/lxc -n "wgadm-lxc-$name" -k >/dev/null 2>&1 || true
  [ -n "$standin_pid" ] && kill "$standin_pid" 2>/dev/null || true
  for f in "$work"/wg-go/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  [ "$rig_up" = 1 ] && bash tests/lxc/down.sh "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
poll() { local secs=$1; shift; local end=$(( $(date +%s) + secs )); until "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.2; done; }

export ANSIBLE_VAULT_PASSWORD_FILE=$work/vault-pass
head -c 32 /dev/urandom | base64 >"$ANSIBLE_VAULT_PASSWORD_FILE"
export ANSIBLE_COLLECTIONS_PATH=$work/collections ANSIBLE_LOCAL_TEMP=$work/ansible-tmp
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_HOST_KEY_CHECKING=True
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
wgadm=$CARGO_TARGET_DIR/release/wgadm

build_deb() { # the package as `make deb` makes it: its version follows the crate, time and commit
  local version; version=$(bash scripts/deb-version.sh)
  cargo build --release --locked -p wgadm >/dev/null 2>&1
  cargo deb -p wgadm --locked --no-build --deb-version "$version" --output "$work/wgadm.deb" >/dev/null
  echo "$version"
}

echo "== build: the wgadm package and the collection"
t=$(now)
deb_version=$(build_deb)
ansible-galaxy collection build ansible --output-path "$work" --force >/dev/null
ansible-galaxy collection install "$work"/wgadm-vpn-*.tar.gz -p "$work/collections" --force --no-deps >/dev/null
echo "built $deb_version in $(since "$t") s"

echo "== the lab: namespaces and bridges vmbr0/vmbr1, no container (tests/lxc)"
modprobe -a nf_tables nft_ct nft_nat nft_masq nft_chain_nat nfnetlink_log nft_log nft_limit 2>/dev/null || true
bash tests/lxc/setup.sh
rig_up=1
bash tests/pve/ct.sh lab "$name"
# shellcheck disable=SC1090
. "/tmp/wgadm-lxc-$name/env"
read -r -a clients <<<"$WGADM_LXC_NS_CLIENTS"
in_ctl() { ip netns exec "$WGADM_LXC_NS_CONTROLLER" "$@"; }
# lxc-attach cannot reach the container: its command socket is in the stand-in's network
# namespace (abstract sockets are per namespace); ssh from the controller can.
on_ct() { bash tests/lxc/ssh.sh "$name" "$@"; }

echo "== the stand-in: its CA, certificate and API token"
pki=$work/pki
mkdir -m 700 "$pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=Proxmox Virtual Environment stand-in CA" \
  -keyout "$pki/ca.key" -out "$pki/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=pve" -keyout "$pki/node.key" -out "$pki/node.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$pki/ext"
openssl x509 -req -in "$pki/node.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial -days 2 \
  -extfile "$pki/ext" -out "$pki/node.pem" 2>/dev/null
token_secret=$(python3 -c 'import uuid; print(uuid.uuid4())')
(umask 077; printf 'root@pam!ansible=%s\n' "$token_secret" >"$pki/token")
(umask 077; printf 'Authorization: PVEAPIToken=root@pam!ansible=%s\n' "$token_secret" >"$pki/header")
mkdir -p "$work/pve"
python3 tests/pve/standin.py --netns "$WGADM_LXC_NS_CONTROLLER" --listen 127.0.0.1:8006 --cert "$pki/node.pem" --key "$pki/node.key" \
  --token-file "$pki/token" --rig "$name" --node pve --state "$work/pve" >"$work/standin.log" 2>&1 &
standin_pid=$!
api() { # METHOD PATH [curl args...]: prints "HTTP_CODE BODY"
  local m=$1 p=$2; shift 2
  in_ctl curl -s --cacert "$pki/ca.pem" -H @"$pki/header" -X "$m" -w '\n%{http_code}' "$@" \
    "https://127.0.0.1:8006/api2/json$p" | { body=$(cat); printf '%s %s\n' "${body##*$'\n'}" "${body%$'\n'*}"; }
}
check "the stand-in answers over HTTPS with its CA" poll 20 bash -c "$(declare -f api in_ctl); pki=$pki WGADM_LXC_NS_CONTROLLER=$WGADM_LXC_NS_CONTROLLER; api GET /version | grep -q '^200 '"

echo "== 1. the stand-in refuses what PVE refuses"
out=$(in_ctl curl -sS --cacert "$pki/ca.pem" -o /dev/null -w '%{http_code}' https://127.0.0.1:8006/api2/json/version)
check "no token: 401 ($out)" test "$out" = 401
out=$(in_ctl curl -s -o /dev/null -w '%{http_code}' https://127.0.0.1:8006/api2/json/version || true)
check "a client without the CA does not connect ($out)" test "$out" = 000
expect400() { # what param path curl-args...: the answer is 400 naming param
  local what=$1 param=$2 m=$3 p=$4 out; shift 4
  out=$(api "$m" "$p" "$@")
  if [[ $out == "400 "* ]] && python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["data"] is None and sys.argv[2] in d["errors"], d' "${out#400 }" "$param" 2>/dev/null; then
    pass "$what: 400 naming $param"
  else
    fail "$what: $out"
  fi
}
expect400 "vmid 90 (PVE reserves ids below 100; the spec's CT 90)" vmid POST /nodes/pve/lxc -d vmid=90 -d ostemplate=local:vztmpl/x.tar.zst
expect400 "an unknown parameter" bogus POST /nodes/pve/lxc -d vmid=190 -d ostemplate=local:vztmpl/x.tar.zst -d bogus=1
expect400 "a missing required parameter" ostemplate POST /nodes/pve/lxc -d vmid=190
expect400 "a wrong type" memory POST /nodes/pve/lxc -d vmid=190 -d ostemplate=local:vztmpl/x -d memory=lots
expect400 "a bad enum value" cmode POST /nodes/pve/lxc -d vmid=190 -d ostemplate=local:vztmpl/x -d cmode=serial
expect400 "a property string with an unknown key" net0 POST /nodes/pve/lxc -d vmid=190 -d ostemplate=local:vztmpl/x -d net0=name=eth0,colour=red
expect400 "a bad address in net0" net0 POST /nodes/pve/lxc -d vmid=190 -d ostemplate=local:vztmpl/x -d net0=name=eth0,ip=192.168.1.900/24
expect400 "tags sent as a list (repeated fields)" tags POST /nodes/pve/lxc -d vmid=190 -d ostemplate=local:vztmpl/x -d tags=vpn -d tags=wireguard
expect400 "a bad HA resource state" state POST /cluster/ha/resources -d sid=ct:190 -d state=running
expect400 "an unknown query parameter" kind GET "/cluster/resources?kind=vm"
check "no container exists yet" bash -c "$(declare -f api in_ctl); pki=$pki WGADM_LXC_NS_CONTROLLER=$WGADM_LXC_NS_CONTROLLER; api GET '/cluster/resources?type=vm' | grep -q '^200 {\"data\": \[\]}'"

echo "== the inventory: a Proxmox host (the stand-in, on this machine) and the server"
inv=$work/inventory
mkdir -p "$inv/group_vars/proxmox_hosts" "$inv/group_vars/wireguard" "$work/sandbox/etc/modules-load.d"
python=$(python3 -c 'import sys; print(sys.executable)')
{
  echo "[proxmox_hosts]"
  echo "pve ansible_connection=local ansible_python_interpreter=$python"
  echo
  cat "$WGADM_LXC_INVENTORY"
} >"$inv/hosts.ini"
cat >"$inv/group_vars/proxmox_hosts/main.yml" <<YML
proxmox_ct_pve_api_host: 127.0.0.1
proxmox_ct_pve_api_port: 8006
proxmox_ct_pve_api_token_id: ansible
proxmox_ct_pve_api_token_secret: "{{ vault_pve_token_secret }}"
proxmox_ct_pve_ca_file: $pki/ca.pem
proxmox_ct_pve_node: pve
proxmox_ct_address: $WGADM_LXC_ADDR/24
proxmox_ct_gateway: $WGADM_LXC_ROUTER
proxmox_ct_extra_netif:
  net1: name=eth1,bridge=vmbr1,ip=$WGADM_LXC_WAN_ADDR/24
proxmox_ct_ssh_public_key: "$(cat "$WGADM_LXC_SSH_KEY.pub")"
proxmox_ct_userspace: true
proxmox_ct_ha: true
# This machine is not a PVE host: the module list goes to a sandbox, proxmoxer comes from
# scripts/setup.sh (Debian 12's python3-proxmoxer is 1.2, too old).
# Nor does it have modprobe or /lib/modules (a kernel with netfilter built in): the role's
# modprobe task is switched off here, the persisted list is checked.
proxmox_ct_host_modules_load_dir: $work/sandbox/etc/modules-load.d
proxmox_ct_host_load_modules: false
proxmox_ct_install_python_deps: false
YML
# The token secret only in a Vault file, never on a command line.
python3 - "$pki/token" "$inv/group_vars/proxmox_hosts/vault.yml" <<'PY'
import sys
secret = open(sys.argv[1]).read().strip().split("=", 1)[1]
with open(sys.argv[2], "w") as f:
    f.write("vault_pve_token_secret: %s\n" % secret)
PY
ansible-vault encrypt "$inv/group_vars/proxmox_hosts/vault.yml" >/dev/null 2>&1
cat >"$inv/group_vars/wireguard/main.yml" <<YML
wireguard_server_deb: $work/wgadm.deb
YML
export WGADM_STATE=$inv/wireguard
"$wgadm" init --endpoint "$WGADM_LXC_ENDPOINT" >/dev/null
"$wgadm" peer add alice >/dev/null
"$wgadm" peer add bob >/dev/null

playbook() { # args...: site.yml from the controller namespace; prints the recap
  in_ctl ansible-playbook -i "$inv/hosts.ini" wgadm.vpn.site "$@" >"$work/site.log" 2>&1 || { tail -40 "$work/site.log" >&2; return 1; }
  sed -n '/PLAY RECAP/,$p' "$work/site.log" | tail -n +2 | sed '/^$/d'
}
changed_of() { awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^changed=/) { split($i, a, "="); s += a[2] } } END { print s + 0 }'; }
failed_of() { awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^(failed|unreachable)=/) { split($i, a, "="); s += a[2] } } END { print s + 0 }'; }

refusals_before() { python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["refusals"]))' "$work/pve/calls.json"; }
refused_before=$(refusals_before)

echo "== 2. --check on the fresh host"
recap=$(playbook --check) || true
printf '%s\n' "$recap"
check "--check on the fresh host fails nowhere" test -n "$recap" -a "$(failed_of <<<"$recap")" = 0
check "... reports what would change" test "$(changed_of <<<"$recap")" -ge 1
check "... and creates nothing" bash -c "$(declare -f api in_ctl); pki=$pki WGADM_LXC_NS_CONTROLLER=$WGADM_LXC_NS_CONTROLLER; api GET '/cluster/resources?type=vm' | grep -q '^200 {\"data\": \[\]}'"
check "... nor writes the module list" test ! -e "$work/sandbox/etc/modules-load.d/wgadm.conf"

echo "== 3. the first run: the template, CT 190, the server"
t=$(now); recap=$(playbook) || true; t_first=$(since "$t")
printf '%s\n' "$recap"
check "site.yml succeeds from nothing (${t_first} s)" test -n "$recap" -a "$(failed_of <<<"$recap")" = 0
conf=$work/pve/lxc/190.conf
check "the container's PVE config says unprivileged, nesting, onboot, startup, tags, dev0" \
  grep -qzE 'dev0: /dev/net/tun.*features: nesting=1.*memory: 1024.*onboot: 1.*startup: order=2.*swap: 512.*tags: vpn;wireguard.*unprivileged: 1' "$conf"
lxcconf=/var/lib/lxc/wgadm-lxc-$name/config
check "... and LXC runs it with the id map, the limits, vmbr0 and dev0" \
  grep -qzE 'lxc.idmap = u 0 131072 65536.*cgroup:rw.*memory.limit_in_bytes = 1073741824.*script.up = [^ ]*/net-up vmbr0.*devices.allow = c 10:200 rwm' "$lxcconf"
check "the host persists every module the server needs (in the sandbox)" \
  bash -c "for m in nf_tables nft_ct nft_nat nft_chain_nat nft_masq nfnetlink_log nft_log nft_limit; do grep -qx \$m $work/sandbox/etc/modules-load.d/wgadm.conf || exit 1; done; ! grep -qx wireguard $work/sandbox/etc/modules-load.d/wgadm.conf"
check "CT 190 is a HA resource" bash -c "$(declare -f api in_ctl); pki=$pki WGADM_LXC_NS_CONTROLLER=$WGADM_LXC_NS_CONTROLLER; api GET /cluster/ha/resources | grep -q '\"sid\": \"ct:190\"'"
check "the stand-in refused nothing the role sent" test "$(refusals_before)" = "$refused_before"

echo "== 4. a client"
mkdir -p "$work/wg-go" "$work/conf"
cat >"$work/wg-go/wireguard-go" <<WRAP
#!/bin/sh
wireguard-go -f "\$1" >"$work/wg-go/\$1.log" 2>&1 &
echo \$! >"$work/wg-go/\$1.pid"
i=0; while [ ! -S "/var/run/wireguard/\$1.sock" ] && [ \$i -lt 500 ]; do sleep 0.01; i=\$((i+1)); done
WRAP
chmod +x "$work/wg-go/wireguard-go"
client_conf() { echo "$work/conf/wp${name#pve}$1.conf"; }
connect() {
  local conf; conf=$(client_conf "$1")
  "$wgadm" peer config "$2" >"$conf"; chmod 600 "$conf"
  sed -i 's|^AllowedIPs = .*|AllowedIPs = 0.0.0.0/0|' "$conf"
  ip netns exec "${clients[$1]}" env WG_QUICK_USERSPACE_IMPLEMENTATION="$work/wg-go/wireguard-go" wg-quick up "$conf" >/dev/null 2>&1
}
ping_from() { ip netns exec "${clients[$1]}" ping -n -q -c 1 -W "${3:-1}" "$2" >/dev/null 2>&1; }
connect 0 alice
read -r mgmt1 _ <<<"$WGADM_LXC_MGMT_HOSTS"
check "alice reaches the management host $mgmt1" poll 30 ping_from 0 "$mgmt1"
! ping_from 0 "$WGADM_LXC_DMZ_HOST" 2 && pass "alice does not reach the DMZ host" || fail "alice reached the DMZ host"

echo "== 5. the second run and --check on the converged host"
t=$(now); recap=$(playbook) || true; t_second=$(since "$t")
printf '%s\n' "$recap"
check "a second run reports changed=0 for every play (${t_second} s)" test -n "$recap" -a "$(changed_of <<<"$recap")" = 0 -a "$(failed_of <<<"$recap")" = 0
recap=$(playbook --check) || true
check "--check on the converged host: changed=0, no failure" test -n "$recap" -a "$(changed_of <<<"$recap")" = 0 -a "$(failed_of <<<"$recap")" = 0

echo "== 6. a rebuilt wgadm is installed and its services restart"
pid_before=$(on_ct systemctl show -p MainPID --value wgadm.service)
touch crates/wgadm/src/main.rs
new_version=$(build_deb)
check "the rebuilt package has a new version ($deb_version -> $new_version)" test "$new_version" != "$deb_version"
recap=$(playbook) || true
check "site.yml installs it" test "$(on_ct dpkg-query -W wgadm | awk '{print $2}')" = "$new_version"
pid_after=$(on_ct systemctl show -p MainPID --value wgadm.service)
check "wgadm.service restarted ($pid_before -> $pid_after)" test "$pid_after" != "$pid_before" -a "$pid_after" != 0

echo "== 7. a peer removed from the inventory"
bob_key=$("$wgadm" --json peer show bob | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')
"$wgadm" peer remove bob >/dev/null
t=$(now); recap=$(playbook) || true; t_peer=$(since "$t")
check "site.yml for one removed peer (${t_peer} s, SC-005: under 120 s)" awk -v t="$t_peer" 'BEGIN { exit !(t < 120) }'
check "bob is gone from the server's interface" bash -c "! bash tests/lxc/ssh.sh $name wg show wg0 peers | grep -qF '$bob_key'"
check "... and from its state" on_ct test ! -e /etc/wgadm/peers/bob.yml

echo "== times: first run ${t_first} s, second run ${t_second} s, a peer change ${t_peer} s"
echo "pve: $passed passed, $failed failed"
[ "$failed" = 0 ]
