#!/usr/bin/env bash
# The Zabbix template and agent config, proven against the real thing (run setup.sh first):
#
#   client alice (198.51.100.10) --+                                        mgmt (192.168.1.10):
#   client bob   (198.51.100.11) --+-- bridge "wan" -- server (198.51.100.1)   PostgreSQL, Zabbix 6.0
#                                                      192.168.1.1 ----------  server, frontend API
#   mallory      (198.51.100.12) --+   (wrong key)     wgadm apply, wgadm      (php -S), zabbix_get
#                                                      daemon, zabbix_agent2
#
# The lab is the project's one lab (crates/lab, `wgadm-lab run --clients 3`): the script runs
# itself again inside it, with the lab's names in LAB_* variables; alice, bob and mallory are its
# clients 0, 1 and 2 (198.51.100.10, .11, .12), Zabbix is its first management host.
#
# The WireGuard server runs `wgadm apply` and `wgadm daemon`, which writes the status snapshot;
# zabbix_agent2 runs beside it in the server's namespace, as the unprivileged user zabbix, with
# the project's UserParameter file, like the agent in the WireGuard container. Zabbix itself lives
# on the management network and polls the agent across it. Everything runs in the lab's network
# namespaces; servers listen on loopback or lab addresses only. Every process is started here and
# stopped by its PID; wgadm-lab then ends wireguard-go and removes the namespaces, also when a
# step fails.
#
# With --zabbix7 the same lab and the same checks run against Zabbix 7.0 LTS from Debian 13's
# packages, what CT 90 (Debian 13) has: zabbix_agent2 7.0 in an LXC container in the WireGuard
# server's network namespace and the daemon's PID namespace; PostgreSQL, the 7.0 server and its
# frontend in an LXC container on the management network; both from a cached Debian 13 rootfs
# (ct7.sh; `tests/zabbix/setup.sh --zabbix7` builds it). zabbix_get is then 7.0's too (chrooted
# into that rootfs, on the management network).
#
# Prints PASS/FAIL lines and ends with "zabbix: N passed, M failed"; exits non-zero on a failure.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
self=$(realpath "$0") # run again inside the lab
cd "$(dirname "$0")/../.."
repo=$PWD
zbx=6.0
case "${1:-}" in
  --zabbix7) zbx=7.0 ;;
  "") ;;
  *) echo "usage: tests/zabbix/test.sh [--zabbix7]" >&2; exit 2 ;;
esac
# shellcheck source=env.sh
. tests/zabbix/env.sh
[ "$(id -u)" = 0 ] || { echo "zabbix test: needs root (network namespaces, services as other users)" >&2; exit 1; }
if [ "$zbx" = 7.0 ]; then
  # shellcheck source=../lxc/lib.sh
  . tests/lxc/lib.sh
  # shellcheck source=ct7.sh
  . tests/zabbix/ct7.sh
  [ -s "$(zbx7_tarball)" ] || { echo "zabbix test: run tests/zabbix/setup.sh --zabbix7 first" >&2; exit 1; }
else
  [ -f "$ZBX_GOLDEN/.wgadm-zabbix-schema" ] || { echo "zabbix test: run tests/zabbix/setup.sh first" >&2; exit 1; }
fi
wgadm=$(realpath "${WGADM:-target/debug/wgadm}")
[ -x "$wgadm" ] || { echo "zabbix test: $wgadm missing (cargo build)" >&2; exit 1; }
"$wgadm" daemon --help >/dev/null || { echo "zabbix test: $wgadm has no daemon subcommand" >&2; exit 1; }
if [ -z "${LAB_NS_SERVER:-}" ]; then
  lab=$(realpath "${WGADM_LAB:-target/debug/wgadm-lab}")
  [ -x "$lab" ] || { echo "zabbix test: $lab missing (cargo build -p wgadm-lab)" >&2; exit 1; }
  exec "$lab" run --clients 3 -- bash "$self" "$@"
fi
# From here on inside the lab (crates/lab/src/lib.rs, Lab::shell_env); wg-quick starts
# wireguard-go through the lab's wrapper, so the lab ends it.
started=$(date +%s)

id=$$
work=$(mktemp -d /tmp/wgadm-zabbix.XXXXXX)
chmod 755 "$work"   # the agent (user zabbix) reads the snapshot in here
results=$work/results
: >"$results"
summarized=
ns_srv=$LAB_NS_SERVER ns_mgmt=$LAB_NS_MGMT
read -r -a client_ns <<<"$LAB_NS_CLIENTS"   # alice, bob, mallory
read -r -a client_wan <<<"$LAB_CLIENTS_WAN"
read -r mgmt_host _ <<<"$LAB_MGMT_HOSTS"    # Zabbix's address
srv_wan=$LAB_SERVER_WAN srv_mgmt=$LAB_SERVER_MGMT
clients=(alice bob)
ns_mallory=${client_ns[2]}
procs=()   # "PID SIGNAL" of every process this script starts, stopped in reverse order

# Runs a command in the background, logging to $1, and records its PID (the command's own: `ip
# netns exec` and setpriv exec, they do not fork). $2 is the signal that stops it cleanly.
start() {
  local log=$1 sig=$2; shift 2
  "$@" >"$log" 2>&1 &
  procs+=("$! $sig")
  last_pid=$!
}
# Stops one started process: its signal, up to 30 s to exit (zabbix_server waits for its
# workers), then SIGKILL for it and the children it still has.
stop() {
  local pid=$1 sig=$2 children
  kill -0 "$pid" 2>/dev/null || return 0
  children=$(ps -o pid= --ppid "$pid" || true)
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  echo "zabbix test: PID $pid did not stop on SIG$sig; killing it" >&2
  # shellcheck disable=SC2086 # one PID a word
  kill -KILL "$pid" $children 2>/dev/null || true
}

cleanup() {
  local rc=$? i
  if [ -z "$summarized" ]; then
    echo "FAIL zabbix: the test stopped early (exit $rc); KEEP_LOGS=1 keeps its logs" >>"$results"
    summary || true
  fi
  for ((i = ${#procs[@]} - 1; i >= 0; i--)); do
    # shellcheck disable=SC2086 # "PID SIGNAL"
    stop ${procs[$i]}
  done
  [ "$zbx" = 6.0 ] || zbx7_cleanup
  # wireguard-go and the namespaces: wgadm-lab, when this script has exited.
  if [ "$rc" != 0 ] && [ -n "${KEEP_LOGS:-}" ]; then
    echo "zabbix test: logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM

pass() { echo "PASS zabbix: $*" | tee -a "$results"; }
fail() { echo "FAIL zabbix: $*" | tee -a "$results"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
summary() {
  local p f
  summarized=1
  p=$(grep -c '^PASS' "$results" || true)
  f=$(grep -c '^FAIL' "$results" || true)
  echo "zabbix test (Zabbix $zbx): $(($(date +%s) - started)) s"
  echo "zabbix: $p passed, $f failed"
  [ "$f" = 0 ] && [ "$p" -gt 0 ]
}
# Waits up to $1 tenths of a second for a command to succeed.
wait_for() { local n=$1; shift; for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
pings() { ip netns exec "$1" ping -c 2 -i 0.2 -W 2 -q "$2" >/dev/null; }

# --- The lab: a WireGuard server managed by wgadm, its clients, a management network. ----------
export WGADM_STATE=$work/state WGADM_CONFIG_DIR=$work/wireguard

iface=${LAB_WG_PREFIX}s
port=51820
"$wgadm" init --endpoint "$srv_wan" --interface "$iface" --listen-port "$port" >/dev/null
"$wgadm" peer add alice --preshared-key >/dev/null   # a preshared key too, for the no-keys check
for c in bob carol dave; do "$wgadm" peer add "$c" >/dev/null; done
"$wgadm" peer disable dave >/dev/null
# Expiry: carol's day is 5 days off (inside the template's 14-day warning), bob's 30 days off.
"$wgadm" peer set carol --expires "$(date -u -d '+5 days' +%F)" >/dev/null
"$wgadm" peer set bob --expires "$(date -u -d '+30 days' +%F)" >/dev/null
in_ns "$ns_srv" "$wgadm" apply >/dev/null
for i in "${!clients[@]}"; do
  c=${clients[$i]}
  conf=$work/${LAB_WG_PREFIX}c$i.conf
  "$wgadm" peer config "$c" >"$conf"
  chmod 600 "$conf"
  in_ns "${client_ns[$i]}" wg-quick up "$conf" 2>/dev/null
  check "$c reaches the server through the tunnel" pings "${client_ns[$i]}" 192.168.100.1
done
# alice keeps some traffic flowing (her byte rates must move); bob goes away after his handshake:
# his "not seen" trigger must fire, alice's must not.
start "$work/alice-ping.log" INT ip netns exec "${client_ns[0]}" ping -i 0.5 -s 1000 -W 1 192.168.100.1
in_ns "${client_ns[1]}" wg-quick down "$work/${LAB_WG_PREFIX}c1.conf" 2>/dev/null
# mallory (${client_wan[2]}) knows the server but has a key the server does not: a ping loop keeps
# her WireGuard sending handshake initiations that nobody answers (refused handshakes).
mallory_conf=$work/${LAB_WG_PREFIX}m.conf
sed -e "s|^PrivateKey = .*|PrivateKey = $(wg genkey)|" -e 's|^Address = .*|Address = 192.168.100.250/32|' \
  "$work/${LAB_WG_PREFIX}c0.conf" >"$mallory_conf"
chmod 600 "$mallory_conf"
in_ns "$ns_mallory" wg-quick up "$mallory_conf" 2>/dev/null
start "$work/mallory-ping.log" INT ip netns exec "$ns_mallory" ping -i 2 -W 1 192.168.100.1

# --- The snapshot, written by the real daemon every second. ------------------------------------
snapshot=$work/run/status.json
mkdir -p "$work/run"
chmod 755 "$work/run"
# In a PID namespace of its own, as in CT 90, whose init stays when the daemon stops (the test
# stops it). The 7.0 agent joins that namespace as the agent in CT 90 shares it with wgadm, so
# its daemon check counts this daemon and not another one on the machine (another test's
# container). unshare ignores SIGTERM while it waits, hence SIGKILL to stop it; its child, the
# namespace's init, then gets one too (--kill-child), and with it everything in the namespace.
start "$work/daemon.log" KILL ip netns exec "$ns_srv" unshare --pid --fork --mount-proc --kill-child \
  sh -c '"$@" & wait "$!"; exec sleep infinity' daemon-init \
  "$wgadm" daemon --snapshot "$snapshot" --interval 1 --metrics-listen off
disown "$last_pid"   # stopped by SIGKILL: no "Killed" line from bash's job control
children() { ps -o pid= --ppid "$1" | tr -d ' '; }
daemon_found() { ns_init=$(children "$last_pid") && [ -n "$ns_init" ] && daemon_pid=$(children "$ns_init") && [ -n "$daemon_pid" ]; }
check "the daemon runs in a PID namespace of its own" wait_for 100 daemon_found
snapshot_ready() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if len(d["peers"]) == 4 else 1)' "$snapshot"; }
check "the snapshot appears with the lab's 4 peers" wait_for 100 snapshot_ready
check "the snapshot is world-readable" test "$(stat -c %a "$snapshot" | cut -c3)" -ge 4
no_keys() { # no private or preshared key of the lab appears in the snapshot
  local k
  for k in "$WGADM_STATE"/server.key "$WGADM_STATE"/peers/*.key "$WGADM_STATE"/peers/*.psk; do
    [ -e "$k" ] || continue
    if grep -qF "$(tr -d '\n' <"$k")" "$snapshot"; then echo "key of $k in the snapshot" >&2; return 1; fi
  done
}
check "the snapshot holds no private or preshared key" no_keys

# --- (a) zabbix_agent2 with the project's UserParameter file, as user zabbix. --------------------
if [ "$zbx" = 7.0 ]; then
  zbx7_unpack "$work/root7"
  lxcpath=$work/lxc
  zbx_user=$(zbx7_uid zabbix):$(zbx7_gid zabbix)
else
  zbx_user=$(id -u zabbix):$(id -g zabbix)
fi
agent_dir=$work/agent
mkdir -p "$agent_dir"
cp zabbix/userparameter_wgadm.conf "$agent_dir/"
cat >"$agent_dir/zabbix_agent2.conf" <<EOF
Server=$mgmt_host
ServerActive=
ListenIP=$srv_mgmt
ListenPort=$ZBX_AGENT_PORT
Hostname=wgadm-lab
LogType=file
LogFile=$agent_dir/zabbix_agent2.log
ControlSocket=$agent_dir/agent.sock
Include=$agent_dir/userparameter_wgadm.conf
EOF
chown -R "$zbx_user" "$agent_dir"
if [ "$zbx" = 7.0 ]; then
  # The agent is its container's init, in the daemon's PID namespace; the snapshot's directory is
  # bound in at the same path.
  zbx7_ct_start "wgz$id-agent" "$lxcpath" "$ns_srv" "$ns_init" \
    "setpriv --reuid=zabbix --regid=zabbix --init-groups -- zabbix_agent2 -f -c $agent_dir/zabbix_agent2.conf" \
    "$agent_dir" "$work/run"
  agent_pid=$(zbx7_ct_pid "wgz$id-agent" "$lxcpath" "$ns_srv")
  # 7.0's zabbix_get, from the rootfs, on the management network.
  zget() { in_ns "$ns_mgmt" chroot "$ZBX7_ROOT" zabbix_get -s "$srv_mgmt" -p "$ZBX_AGENT_PORT" -t 10 -k "$1"; }
else
  start "$agent_dir/stdout.log" TERM ip netns exec "$ns_srv" setpriv --reuid=zabbix --regid=zabbix --init-groups -- \
    zabbix_agent2 -f -c "$agent_dir/zabbix_agent2.conf"
  agent_pid=$last_pid
  zget() { in_ns "$ns_mgmt" zabbix_get -s "$srv_mgmt" -p "$ZBX_AGENT_PORT" -t 10 -k "$1"; }
fi
check "zabbix_agent2 answers zabbix_get" wait_for 100 zget agent.ping
agent_is() { [ "$(zget agent.version | cut -d. -f1,2)" = "$zbx" ]; }
check "the agent is Zabbix $zbx ($(zget agent.version || true))" agent_is
check "the agent runs as user zabbix, not root" test "$(ps -o uid= -p "$agent_pid" | tr -d ' ')" = "${zbx_user%:*}"
agent_snapshot() { # the value is the live snapshot: valid JSON with the lab's peers and interface
  zget "wgadm.status[\"$snapshot\"]" >"$work/zget.json" &&
    python3 - "$work/zget.json" "$iface" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
names = sorted(p["name"] for p in d["peers"])
assert d["version"] == 1 and d["interface"] == sys.argv[2] and d["up"], d
assert names == ["alice", "bob", "carol", "dave"], names
assert any(p["connected"] for p in d["peers"] if p["name"] == "alice"), "alice not connected"
PY
}
check "zabbix_get wgadm.status[PATH] returns the live snapshot (interface, 4 peers, alice connected)" agent_snapshot
missing_snapshot() { # a missing file comes back as cat's message (the template turns it into an error)
  zget "wgadm.status[$work/run/missing.json]" | grep -q 'No such file'
}
check "a missing snapshot path comes back as an error message, not JSON" missing_snapshot

# --- (b) A real Zabbix: PostgreSQL, server and frontend API in the management namespace. ---------
server_dir=$work/server
mkdir -p "$server_dir"
cat >"$server_dir/zabbix_server.conf" <<EOF
ListenIP=127.0.0.1
ListenPort=$ZBX_SERVER_PORT
LogType=file
LogFile=$server_dir/zabbix_server.log
PidFile=$server_dir/zabbix_server.pid
SocketDir=$server_dir
DBHost=127.0.0.1
DBPort=$ZBX_PG_PORT
DBName=zabbix
DBUser=zabbix
DBPassword=$ZBX_DB_PASSWORD
CacheUpdateFrequency=1
StartPollers=2
StartPollersUnreachable=1
StartPreprocessors=2
StartLLDProcessors=1
StartHistoryPollers=1
StartDBSyncers=1
StartTrappers=1
StartPingers=0
StartDiscoverers=0
StartHTTPPollers=0
StartEscalators=1
StartAlerters=1
StartTimers=1
StartReportWriters=0
HousekeepingFrequency=0
Timeout=4
EOF
chown -R "$zbx_user" "$server_dir"
pg_flags=(-c listen_addresses=127.0.0.1 -c port="$ZBX_PG_PORT" -c fsync=off -c synchronous_commit=off
  -c full_page_writes=off)
if [ "$zbx" = 7.0 ]; then
  # One container: its init starts PostgreSQL on the prepared cluster of the (throwaway) rootfs,
  # then the server (started as root, it drops to user zabbix: AllowRoot=0) and the frontend.
  zbx_frontend_conf >"$ZBX7_ROOT$ZBX_FRONTEND_CONF"
  chown "0:$(zbx7_gid www-data)" "$ZBX7_ROOT$ZBX_FRONTEND_CONF"
  chmod 640 "$ZBX7_ROOT$ZBX_FRONTEND_CONF"
  pg7=$(zbx7_pgbin)
  cat >"$server_dir/init.sh" <<INIT
#!/bin/sh
# PID 1 of the Zabbix 7.0 server's container (tests/zabbix/test.sh --zabbix7).
install -d -o postgres -g postgres /run/postgresql
setpriv --reuid=postgres --regid=postgres --init-groups -- $pg7/postgres -D $ZBX7_PGDATA \\
  ${pg_flags[*]} -c unix_socket_directories=/run/postgresql >$server_dir/postgres.log 2>&1 &
i=0
until $pg7/pg_isready -q -h 127.0.0.1 -p $ZBX_PG_PORT; do
  i=\$((i + 1)); [ \$i -lt 300 ] || exit 1; sleep 0.1
done
zabbix_server -f -c $server_dir/zabbix_server.conf >$server_dir/stdout.log 2>&1 &
setpriv --reuid=www-data --regid=www-data --init-groups -- php -S 127.0.0.1:$ZBX_WEB_PORT -t /usr/share/zabbix \\
  >$server_dir/php.log 2>&1 &
wait
INIT
  chmod 755 "$server_dir/init.sh"
  zbx7_ct_start "wgz$id-zbx" "$lxcpath" "$ns_mgmt" "" "/bin/sh $server_dir/init.sh" "$server_dir"
  check "PostgreSQL starts (a copy of the prepared Zabbix database)" \
    wait_for 300 zbx7_ct_exec "wgz$id-zbx" "$lxcpath" "$ns_mgmt" "$pg7/pg_isready" -q -h 127.0.0.1 -p "$ZBX_PG_PORT"
else
  bin=$(pg_bin)
  cp -a "$ZBX_GOLDEN" "$work/pgdata"
  install -d -o postgres -g postgres "$work/pgsock"
  # SIGINT: PostgreSQL's fast shutdown.
  start "$work/postgres.log" INT ip netns exec "$ns_mgmt" setpriv --reuid=postgres --regid=postgres --init-groups -- \
    "$bin/postgres" -D "$work/pgdata" "${pg_flags[@]}" -c unix_socket_directories="$work/pgsock"
  check "PostgreSQL starts (a copy of the prepared Zabbix database)" \
    wait_for 300 in_ns "$ns_mgmt" "$bin/pg_isready" -q -h 127.0.0.1 -p "$ZBX_PG_PORT"
  # Started as root, the server drops to user zabbix itself (AllowRoot=0).
  start "$server_dir/stdout.log" TERM ip netns exec "$ns_mgmt" zabbix_server -f -c "$server_dir/zabbix_server.conf"
  start "$work/php.log" TERM ip netns exec "$ns_mgmt" php -S "127.0.0.1:$ZBX_WEB_PORT" -t /usr/share/zabbix
fi
server_up() { grep -q 'server #0 started' "$server_dir/zabbix_server.log"; }
check "zabbix_server starts" wait_for 300 server_up

# In the background and waited for, so that a signal to this script stops it at once.
ip netns exec "$ns_mgmt" python3 tests/zabbix/zabbix_check.py \
  --url "http://127.0.0.1:$ZBX_WEB_PORT/api_jsonrpc.php" --zabbix-version "$zbx" \
  --template "$repo/zabbix/template_wgadm.yaml" --results "$results" \
  --agent "$srv_mgmt:$ZBX_AGENT_PORT" --snapshot "$snapshot" \
  --daemon-pid "$daemon_pid" \
  --port "$port" --up alice --gone bob --never carol --disabled dave --up-endpoint "${client_wan[0]}" \
  --refused-source "${client_wan[2]}" --expiring carol --expiring-days 5 --expiring-later bob &
procs+=("$! TERM")
wait "$!" || true
summary
