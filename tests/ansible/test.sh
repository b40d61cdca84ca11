#!/usr/bin/env bash
# The Ansible collection end to end (issue 6): site.yml and peers.yml against an unprivileged
# Debian 13 LXC container mirroring CT 90 (tests/lxc/), from a controller namespace over SSH,
# with WireGuard clients that use the configs wgadm made. Proxmox itself cannot run here: the
# proxmox_ct role is checked by its argument specs, a syntax check and ansible-lint.
# Ends with `ansible: N passed, M failed`; exits non-zero on any failure. Cleans up on exit.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
[ "$(id -u)" = 0 ] || { echo "ansible test: needs root (LXC, namespaces)" >&2; exit 1; }

name=ans$$
work=$(mktemp -d /tmp/wgadm-ansible-XXXXXX)
chmod 700 "$work"
passed=0 failed=0
pids=()
rig_up=0

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$work"/wg-go/pids/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  [ "$rig_up" = 1 ] && bash tests/lxc/down.sh "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

pass() { passed=$((passed + 1)); printf 'PASS %s\n' "$*"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# Polls a command until it succeeds or `secs` pass.
poll() { local secs=$1; shift; local end=$(( $(date +%s) + secs )); until "$@"; do [ "$(date +%s)" -lt "$end" ] || return 1; sleep 0.2; done; }

wgadm=$repo/target/release/wgadm
export ANSIBLE_VAULT_PASSWORD_FILE=$work/vault-pass
head -c 32 /dev/urandom | base64 >"$ANSIBLE_VAULT_PASSWORD_FILE"
export ANSIBLE_COLLECTIONS_PATH=$work/collections ANSIBLE_LOCAL_TEMP=$work/ansible-tmp
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_HOST_KEY_CHECKING=True

echo "== build: the wgadm package and the collection"
t=$(now)
cargo build --release --locked -p wgadm -p wgadm-lab >/dev/null 2>&1
cargo deb -p wgadm --locked --no-build --output "$work/wgadm.deb" >/dev/null
ansible-galaxy collection build ansible --output-path "$work" --force >/dev/null
ansible-galaxy collection install "$work"/wgadm-vpn-*.tar.gz -p "$work/collections" --force >/dev/null
echo "built in $(since "$t") s"

echo "== the proxmox_ct role without Proxmox: argument specs and syntax"
cat >"$work/argspec.yml" <<'YML'
- name: Argument specs of proxmox_ct
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: wgadm.vpn.proxmox_ct
      vars:
        proxmox_ct_memory_mb: lots
YML
out=$(ansible-playbook -i localhost, "$work/argspec.yml" 2>&1 || true)
check "proxmox_ct refuses bad arguments before any task, naming them" \
  grep -q "proxmox_ct_memory_mb" <<<"$out"
grep -q "proxmox_ct_pve_api_token_id" <<<"$out" && pass "proxmox_ct names a missing required argument" || fail "proxmox_ct names a missing required argument: $out"
for pb in site peers; do
  check "syntax of $pb.yml" ansible-playbook --syntax-check -i ansible/inventories/example/hosts.yml "ansible/playbooks/$pb.yml"
done

echo "== the container (tests/lxc)"
modprobe -a nf_tables nft_ct nft_nat nft_masq nft_chain_nat nfnetlink_log nft_log nft_limit 2>/dev/null || true
bash tests/lxc/setup.sh
rig_up=1
bash tests/lxc/up.sh "$name"
# shellcheck disable=SC1090
. "/tmp/wgadm-lxc-$name/env"
read -r -a clients <<<"$WGADM_LXC_NS_CLIENTS"
in_ctl() { ip netns exec "$WGADM_LXC_NS_CONTROLLER" "$@"; }
on_ct() { bash tests/lxc/exec.sh "$name" "$@"; }

echo "== the state on the controller"
inv=$work/inventory
mkdir -p "$inv/group_vars"
cp "$WGADM_LXC_INVENTORY" "$inv/hosts.ini"
cat >"$inv/group_vars/wireguard.yml" <<YML
wireguard_server_deb: $work/wgadm.deb
YML
export WGADM_STATE=$inv/wireguard
"$wgadm" init --endpoint "$WGADM_LXC_ENDPOINT" >/dev/null
"$wgadm" peer add alice >/dev/null
"$wgadm" peer add bob >/dev/null

playbook() { # playbook args...: runs it from the controller namespace, prints its recap
  local pb=$1; shift
  in_ctl ansible-playbook -i "$inv/hosts.ini" "wgadm.vpn.$pb" "$@" >"$work/$pb.log" 2>&1 || { tail -40 "$work/$pb.log" >&2; return 1; }
  grep -A3 "PLAY RECAP" "$work/$pb.log" | tail -n +2
}
changed_of() { grep -oE 'changed=[0-9]+' | head -1 | cut -d= -f2; }

echo "== 1. site.yml on the fresh container, then again"
t=$(now); recap=$(playbook site) || true; t_site=$(since "$t")
check "site.yml succeeds on a fresh container (${t_site} s)" test -n "$recap"
t=$(now); recap=$(playbook site) || true; t_noop=$(since "$t")
check "a second site.yml reports changed=0 (${t_noop} s): $recap" test "$(changed_of <<<"$recap")" = 0
recap=$(playbook site --check) || true
check "site.yml --check on a converged server reports changed=0" test "$(changed_of <<<"$recap")" = 0
"$wgadm" peer add erin >/dev/null
recap=$(playbook site --check) || true
check "site.yml --check with a new peer reports the change: $recap" test "$(changed_of <<<"$recap")" -ge 1
check "... and changes nothing on the server" on_ct test ! -e /etc/wgadm/peers/erin.yml
check "... nor on the interface" bash -c "! bash tests/lxc/exec.sh $name wg show wg0 peers | grep -q '$("$wgadm" --json peer show erin | python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')'"
"$wgadm" peer remove erin >/dev/null

echo "== 2. services and a client"
for unit in wg-quick@wg0 wgadm.service wgadm-firewall.service; do
  check "$unit is enabled" on_ct systemctl -q is-enabled "$unit"
done
for unit in wg-quick@wg0 wgadm.service; do
  check "$unit is active" on_ct systemctl -q is-active "$unit"
done

mkdir -p "$work/conf"
# The clients' namespaces are the LXC rig's, not the lab's: only the lab's wireguard-go wrapper
# (crates/lab), whose wireguard-go processes the cleanup ends by the PIDs in wg-go/pids/.
wg_wrapper=$("$repo/target/release/wgadm-lab" wrapper "$work/wg-go")
client_conf() { echo "$work/conf/wa${name#ans}$1.conf"; }   # interface names unique machine-wide
connect() { # index peer [full]: with "full" the client routes everything through the tunnel,
  # so that only the server's firewall stands between it and the DMZ
  local conf; conf=$(client_conf "$1")
  "$wgadm" peer config "$2" >"$conf"; chmod 600 "$conf"
  [ "${3:-}" = full ] && sed -i 's|^AllowedIPs = .*|AllowedIPs = 0.0.0.0/0|' "$conf"
  ip netns exec "${clients[$1]}" env WG_QUICK_USERSPACE_IMPLEMENTATION="$wg_wrapper" wg-quick up "$conf" >/dev/null 2>&1
}
disconnect() { ip netns exec "${clients[$1]}" wg-quick down "$(client_conf "$1")" >/dev/null 2>&1 || true; }
ping_from() { ip netns exec "${clients[$1]}" ping -n -q -c 1 -W "${3:-1}" "$2" >/dev/null 2>&1; }

connect 0 alice full
check "alice reaches the server's VPN address" poll 10 ping_from 0 192.168.100.1
read -r mgmt1 _ <<<"$WGADM_LXC_MGMT_HOSTS"
check "alice reaches the management host $mgmt1" poll 10 ping_from 0 "$mgmt1"
! ping_from 0 "$WGADM_LXC_DMZ_HOST" && pass "alice does not reach the DMZ host" || fail "alice reached the DMZ host"

echo "== 2b. the Zabbix agent, when asked (wireguard_server_zabbix_agent)"
zbx_vars=(-e wireguard_server_zabbix_agent=true -e "wireguard_server_zabbix_server=$mgmt1")
check "the role's UserParameter file is zabbix/userparameter_wgadm.conf" \
  cmp zabbix/userparameter_wgadm.conf ansible/roles/wireguard_server/files/userparameter_wgadm.conf
recap=$(playbook site -e wireguard_server_zabbix_agent=true 2>/dev/null) || true
check "without wireguard_server_zabbix_server the role stops, naming it" \
  grep -q 'needs wireguard_server_zabbix_server' "$work/site.log"
recap=$(playbook site "${zbx_vars[@]}") || true
check "site.yml installs the agent: $recap" test "$(changed_of <<<"$recap")" -ge 1
recap=$(playbook site "${zbx_vars[@]}") || true
check "a second run with the agent reports changed=0: $recap" test "$(changed_of <<<"$recap")" = 0
agent_up() { on_ct systemctl -q is-enabled zabbix-agent2 && on_ct systemctl -q is-active zabbix-agent2; }
check "zabbix-agent2 is enabled and active" agent_up
zbx_get() { # KEY: a passive check from the management host, Zabbix's own protocol (no zabbix_get here)
  ip netns exec "$WGADM_LXC_NS_MGMT" python3 - "$WGADM_LXC_ADDR" "$1" <<'PY'
import socket, struct, sys
s = socket.create_connection((sys.argv[1], 10050), timeout=10)
key = sys.argv[2].encode()
s.sendall(b"ZBXD\x01" + struct.pack("<Q", len(key)) + key)
data = b""
while chunk := s.recv(65536):
    data += chunk
assert data[:5] == b"ZBXD\x01", data[:20]
sys.stdout.write(data[13:13 + struct.unpack("<Q", data[5:13])[0]].decode())
PY
}
agent_7() { zbx_get agent.version | grep -q '^7\.0\.'; }
check "the agent answers the management host, and is Debian 13's 7.0 ($(zbx_get agent.version 2>/dev/null || true))" poll 30 agent_7
snapshot_peers() { zbx_get wgadm.status | python3 -c 'import json,sys; d=json.load(sys.stdin); assert sorted(p["name"] for p in d["peers"]) == ["alice", "bob"], d'; }
check "wgadm.status returns the daemon's snapshot (alice, bob) through the UserParameter" snapshot_peers
check "the agent runs as user zabbix" \
  test "$(on_ct sh -c 'ps -o user= -p "$(systemctl show -p MainPID --value zabbix-agent2)"')" = zabbix

echo "== 3. peers.yml: a new peer while alice pings every 10 ms, then a removal"
ip netns exec "${clients[0]}" ping -n -i 0.01 192.168.100.1 >"$work/ping.log" 2>&1 &
pids+=($!); pinger=$!
"$wgadm" peer add carol >/dev/null
t=$(now); playbook peers >/dev/null; t_peers=$(since "$t")
pass "peers.yml for one added peer (${t_peers} s)"
connect 2 carol
check "carol connects after peers.yml" poll 15 ping_from 2 192.168.100.1
kill -INT "$pinger"; wait "$pinger" 2>/dev/null || true
sent=$(grep -oE '[0-9]+ packets transmitted' "$work/ping.log" | cut -d' ' -f1)
got=$(grep -oE '[0-9]+ received' "$work/ping.log" | cut -d' ' -f1)
# The last request may still be in flight when ping stops: allow that one, nothing else.
check "alice lost no packet while carol was added ($got of $sent answered)" test $((sent - got)) -le 1

connect 1 bob
check "bob connects" poll 10 ping_from 1 192.168.100.1
"$wgadm" peer remove bob >/dev/null
playbook peers >/dev/null
disconnect 1
ip netns exec "${clients[1]}" env WG_QUICK_USERSPACE_IMPLEMENTATION="$wg_wrapper" wg-quick up "$(client_conf 1)" >/dev/null 2>&1 || true
! poll 6 ping_from 1 192.168.100.1 && pass "bob, removed, can no longer handshake" || fail "bob still gets through after removal"
check "bob's files are gone from the server" on_ct test ! -e /etc/wgadm/peers/bob.yml

echo "== 4. restart the container (host reboot with onboot), kill the daemon"
t=$(now)
bash tests/lxc/restart.sh "$name" >/dev/null 2>&1
check "wg-quick@wg0 and wgadm.service are back after the restart" poll 60 on_ct systemctl -q is-active wg-quick@wg0 wgadm.service
check "alice reconnects within 60 s of the restart ($(since "$t") s)" poll 60 ping_from 0 192.168.100.1
check "forwarding is back: alice reaches the management host again" poll 30 ping_from 0 "$mgmt1"
check "the firewall is back: alice still does not reach the DMZ" bash -c "! ip netns exec ${clients[0]} ping -n -q -c 2 -W 1 $WGADM_LXC_DMZ_HOST >/dev/null 2>&1"
pid_before=$(on_ct systemctl show -p MainPID --value wgadm.service)
on_ct systemctl kill -s KILL wgadm.service
restarted() { local p; p=$(on_ct systemctl show -p MainPID --value wgadm.service); [ -n "$p" ] && [ "$p" != 0 ] && [ "$p" != "$pid_before" ] && on_ct systemctl -q is-active wgadm.service; }
check "systemd restarts the killed daemon" poll 30 restarted

echo "== 5. keys"
check "the server key in the container is root's, mode 0600" test "$(on_ct stat -c '%U %a' /etc/wgadm/server.key)" = "root 600"
check "no peer private key on the server" test -z "$(on_ct find /etc/wgadm/peers -name '*.key')"
plaintext_keys() { # files in the repo that hold a private key in the clear
  git -C "$repo" ls-files -z | while IFS= read -r -d '' f; do
    case "$f" in *.key|*.psk) head -c 14 "$repo/$f" | grep -q '^\$ANSIBLE_VAULT' || echo "$f" ;; esac
    grep -lE '^PrivateKey *= *[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=' "$repo/$f" 2>/dev/null || true
  done
}
leaks=$(plaintext_keys)
check "no plaintext private key in the repo or the example inventory${leaks:+: $leaks}" test -z "$leaks"

echo "== 6. ansible-lint (production profile)"
check "ansible-lint passes" bash -c "cd ansible && ansible-lint >/dev/null 2>&1"

echo "== onboarding, timed (SC-006): peer add, peers.yml, the client connects"
t=$(now)
"$wgadm" peer add dave >/dev/null
playbook peers >/dev/null
disconnect 1
connect 1 dave
poll 15 ping_from 1 192.168.100.1 && t_onboard=$(since "$t") && pass "dave onboarded in ${t_onboard} s" || fail "dave onboarding"

echo
printf '%-44s %8s\n' "benchmark" "seconds"
printf '%-44s %8s\n' "site.yml on a fresh container" "$t_site" "site.yml, nothing to do" "$t_noop" \
  "peers.yml, one added peer (SC-005)" "$t_peers" "onboarding a peer end to end (SC-006)" "${t_onboard:-n/a}"
echo
echo "ansible: $passed passed, $failed failed"
[ "$failed" = 0 ]
