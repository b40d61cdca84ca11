#!/usr/bin/env bash
# Inside the Zabbix 7.0 rootfs build (tests/zabbix/ct7.sh, zbx7_build), run in a mount namespace
# of its own: installs the packages with apt in a chroot of the unpacked Debian 13 rootfs and
# prepares a PostgreSQL cluster with the Zabbix schema. Arguments: ROOTFS DEB-CACHE PGDATA
# DB-PASSWORD PACKAGE...
set -euo pipefail
build=$1 debs=$2 pgdata=$3 password=$4
shift 4
mount -t proc proc "$build/proc"
mount --rbind /dev "$build/dev"
mount --bind "$debs" "$build/var/cache/apt/archives"
cp /etc/resolv.conf "$build/etc/resolv.conf"
# Package scripts must not start PostgreSQL or the Zabbix daemons.
printf '#!/bin/sh\nexit 101\n' >"$build/usr/sbin/policy-rc.d"
chmod 755 "$build/usr/sbin/policy-rc.d"
in_root() { chroot "$build" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
in_root apt-get update -qq
in_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
rm -f "$build/usr/sbin/policy-rc.d"

bin=$(find "$build/usr/lib/postgresql" -mindepth 2 -maxdepth 2 -name bin | sort -V | tail -n1)
bin=${bin#"$build"}
as_pg() { in_root setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
install -d -o "$(in_root id -u postgres)" -g "$(in_root id -g postgres)" -m 700 "$build$pgdata"
as_pg "$bin/initdb" -D "$pgdata" -U postgres -E UTF8 --no-locale \
  --auth-local=peer --auth-host=scram-sha-256 >/dev/null
sock=/tmp/wgadm-pg
install -d -o "$(in_root id -u postgres)" "$build$sock"
# No TCP while loading; no fsync: the rootfs is rebuilt from scratch if this dies.
chroot "$build" setpriv --reuid=postgres --regid=postgres --init-groups -- "$bin/postgres" -D "$pgdata" \
  -c listen_addresses= -c unix_socket_directories="$sock" \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off >"$build/tmp/wgadm-pg.log" 2>&1 &
pg=$!
trap 'kill -INT $pg 2>/dev/null || true; wait $pg || true' EXIT
for _ in $(seq 300); do as_pg "$bin/pg_isready" -q -h "$sock" && break; sleep 0.1; done
psql() { as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -U postgres "$@"; }
psql -d postgres -c "CREATE ROLE zabbix LOGIN PASSWORD '$password'" \
  -c "CREATE DATABASE zabbix OWNER zabbix ENCODING 'UTF8' TEMPLATE template0"
sql=/usr/share/zabbix-server-pgsql
# Objects belong to zabbix, as if its own user had loaded them.
{
  echo 'SET ROLE zabbix;'
  zcat "$build$sql/schema.sql.gz" "$build$sql/images.sql.gz" "$build$sql/data.sql.gz"
  # The default "Zabbix server" host would poll an agent on 127.0.0.1:10050 that is not ours.
  echo "UPDATE hosts SET status=1 WHERE host='Zabbix server';"
} | psql -d zabbix >/dev/null
kill -INT "$pg"
wait "$pg" || true
trap - EXIT
rm -rf "${build:?}$sock" "$build/tmp/wgadm-pg.log"
echo "$bin" >"$build/.wgadm-zabbix7-pgbin"
