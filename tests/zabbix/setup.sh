#!/usr/bin/env bash
# Prepares the Zabbix test rig from Debian's packages: zabbix_agent2, zabbix_get, a Zabbix 6.0
# server on PostgreSQL and its PHP frontend (for the API); with --zabbix7, Zabbix 7.0 instead.
# Idempotent: when everything is there it only checks and takes about a second.
#
# What it leaves behind: the packages; a PostgreSQL cluster with the Zabbix schema in
# $ZBX_RIG/pgdata (stopped; test.sh runs a throwaway copy of it); the frontend's config
# /etc/zabbix/zabbix.conf.php pointing at that copy's loopback port. No service is started or
# enabled: package scripts are kept from starting daemons while installing, and every process the
# test needs is started by test.sh and stopped by PID.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=env.sh
. ./env.sh
[ "$(id -u)" = 0 ] || { echo "zabbix setup: needs root (apt, a database cluster owned by postgres)" >&2; exit 1; }

# --zabbix7: instead, the Debian 13 rootfs with Zabbix 7.0 that `test.sh --zabbix7` runs (ct7.sh:
# built once, cached under /var/cache/wgadm-test/zabbix7; nothing installed on this machine but
# LXC's tools).
if [ "${1:-}" = --zabbix7 ]; then
  # shellcheck source=../lxc/lib.sh
  . ../lxc/lib.sh
  # shellcheck source=ct7.sh
  . ./ct7.sh
  zbx7_setup
  exit
fi

# php8.2-cgi satisfies php8.2's "apache2 module | fpm | cgi" dependency without pulling in apache2
# (the frontend is served by `php -S` on loopback); zabbix_get ships in zabbix-server-pgsql.
apt_packages=(zabbix-agent2 zabbix-server-pgsql zabbix-frontend-php php8.2-cli php8.2-pgsql php8.2-cgi postgresql)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

policy=/usr/sbin/policy-rc.d
own_policy=
cleanup() { [ -z "$own_policy" ] || rm -f "$policy"; }
trap cleanup EXIT
if [ ${#missing[@]} -gt 0 ]; then
  echo "zabbix setup: installing ${missing[*]}" >&2
  # Keep package scripts from starting services (zabbix-agent2 on 0.0.0.0:10050, PostgreSQL's
  # main cluster): systemd is not PID 1 here, so they would run as untracked processes.
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in zabbix_agent2 zabbix_get zabbix_server php; do
  command -v "$tool" >/dev/null || { echo "zabbix setup: $tool missing after install" >&2; exit 1; }
done

# The database: a cluster of our own (not Debian's main cluster), schema loaded once. The test
# copies it, so every run starts from a clean Zabbix with nothing but the default data.
sql=/usr/share/zabbix-server-pgsql
version=$(dpkg-query -W -f='${Version}' zabbix-server-pgsql)
stamp="$ZBX_GOLDEN/.wgadm-zabbix-schema"
if [ "$(cat "$stamp" 2>/dev/null)" != "$version" ]; then
  echo "zabbix setup: creating the Zabbix $version database in $ZBX_GOLDEN" >&2
  bin=$(pg_bin)
  as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
  rm -rf "$ZBX_GOLDEN"
  mkdir -p "$ZBX_RIG"
  install -d -o postgres -g postgres -m 700 "$ZBX_GOLDEN"
  as_pg "$bin/initdb" -D "$ZBX_GOLDEN" -U postgres -E UTF8 --no-locale \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  sock=$(mktemp -d)
  chown postgres "$sock"
  # No TCP while loading; no fsync: the cluster is rebuilt from scratch if this run dies.
  # Started directly (not through a function) so that $! is the postmaster itself.
  setpriv --reuid=postgres --regid=postgres --init-groups -- "$bin/postgres" -D "$ZBX_GOLDEN" \
    -c listen_addresses= -c unix_socket_directories="$sock" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off >"$sock/log" 2>&1 &
  pg_pid=$!
  stop_pg() { kill -INT "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; rm -rf "$sock"; }
  trap 'stop_pg; cleanup' EXIT
  for _ in $(seq 100); do as_pg "$bin/pg_isready" -q -h "$sock" && break; sleep 0.1; done
  psql() { as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -U postgres "$@"; }
  psql -d postgres -c "CREATE ROLE zabbix LOGIN PASSWORD '$ZBX_DB_PASSWORD'" \
    -c "CREATE DATABASE zabbix OWNER zabbix ENCODING 'UTF8' TEMPLATE template0"
  # Objects belong to zabbix, as if its own user had loaded them.
  { echo 'SET ROLE zabbix;'
    zcat "$sql/schema.sql.gz" "$sql/images.sql.gz" "$sql/data.sql.gz"
    # The default "Zabbix server" host would poll an agent on 127.0.0.1:10050 that is not ours.
    echo "UPDATE hosts SET status=1 WHERE host='Zabbix server';"
  } | psql -d zabbix >/dev/null
  stop_pg
  trap cleanup EXIT
  echo "$version" >"$stamp"
fi

# The frontend reads its database settings from this one fixed path. Never overwrite a file that
# a real installation wrote.
if [ -e "$ZBX_FRONTEND_CONF" ] && ! grep -qF "$ZBX_MARK" "$ZBX_FRONTEND_CONF"; then
  echo "zabbix setup: $ZBX_FRONTEND_CONF exists and is not ours; refusing to replace it" >&2
  exit 1
fi
conf=$(zbx_frontend_conf)
if [ "$(cat "$ZBX_FRONTEND_CONF" 2>/dev/null)" != "$conf" ]; then
  printf '%s\n' "$conf" >"$ZBX_FRONTEND_CONF"
  chmod 600 "$ZBX_FRONTEND_CONF"
fi
