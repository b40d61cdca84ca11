#!/usr/bin/env bash
# A real NetBox on 127.0.0.1 for wgadm's NetBox tests: NetBox from PyPI in a Python 3.12 venv,
# PostgreSQL and Redis from Debian, each in a private instance of its own (own data directory,
# own port, loopback only) so nothing on the machine is touched.
#
#   bash tests/netbox/setup.sh          install what is missing, start everything, write $RUN/env
#   bash tests/netbox/setup.sh stop     stop what the last start started (by its recorded PIDs)
#
# Cached under $WGADM_TEST_CACHE (default /var/cache/wgadm-test): the venv per NetBox version,
# the PostgreSQL cluster and, in it, a migrated template database per NetBox version. A second
# run clones the template (a second) instead of migrating (minutes). Every start gets a fresh
# database, a fresh superuser and a fresh API token; the token only ever goes to a file (0600).
set -euo pipefail

NETBOX_VERSION=${NETBOX_VERSION:-4.7.3}
CACHE=${WGADM_TEST_CACHE:-/var/cache/wgadm-test}
RUN=$CACHE/run
PG_PORT=${WGADM_TEST_PG_PORT:-54329}
REDIS_PORT=${WGADM_TEST_REDIS_PORT:-63799}
NETBOX_PORT=${WGADM_TEST_NETBOX_PORT:-18632}

NB_DIR=$CACHE/netbox/$NETBOX_VERSION
VENV=$NB_DIR/venv
NETBOX_ROOT=$NB_DIR/root
PG_SOCK=$RUN/pgsock
TEMPLATE_DB=netbox_tpl_${NETBOX_VERSION//[^0-9a-zA-Z]/_}
TEST_DB=netbox_test

log() { echo "netbox-setup: $*" >&2; }
t0=$EPOCHREALTIME
step_start=$t0
# Prints how long the step that just ended took.
timed() {
  local now=$EPOCHREALTIME
  awk -v a="$step_start" -v b="$now" -v s="$1" 'BEGIN { printf "netbox-setup: %-34s %6.1f s\n", s, b - a }' >&2
  step_start=$now
}

pg_major() { find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -n | tail -1; }
pg_bin() { echo "/usr/lib/postgresql/$(pg_major)/bin/$1"; }
as_postgres() { runuser -u postgres -- "$@"; }
psql_q() { PGOPTIONS="-c client_min_messages=warning" as_postgres "$(pg_bin psql)" -h "$PG_SOCK" -p "$PG_PORT" -U postgres -qAt -v ON_ERROR_STOP=1 "$@"; }

# The cluster is per PostgreSQL major version (a data directory belongs to one).
PG_DATA=$CACHE/postgres/$(pg_major)/data

# Stops the processes a previous start recorded. Only our PIDs, and only when they still are ours.
stop_all() {
  if [ -f "$RUN/netbox.pid" ]; then
    local pid
    pid=$(cat "$RUN/netbox.pid")
    if kill -0 "$pid" 2>/dev/null && grep -q gunicorn "/proc/$pid/cmdline" 2>/dev/null; then
      # The workers are the master's children: noted first, so none outlives a master that
      # had to be killed.
      local workers
      workers=$(pgrep -P "$pid" || true)
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      # shellcheck disable=SC2086
      kill -KILL "$pid" $workers 2>/dev/null || true
    fi
    rm -f "$RUN/netbox.pid"
  fi
  if [ -f "$RUN/redis.pid" ]; then
    local pid
    pid=$(cat "$RUN/redis.pid")
    if kill -0 "$pid" 2>/dev/null && grep -q redis "/proc/$pid/cmdline" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$RUN/redis.pid"
  fi
  if [ -f "$PG_DATA/postmaster.pid" ]; then
    as_postgres "$(pg_bin pg_ctl)" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -f "$RUN/token" "$RUN/env"
}

if [ "${1:-start}" = stop ]; then
  stop_all
  log "stopped"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "run me as root (I install Debian packages and run PostgreSQL as its own user)"
  exit 1
fi

# --- Debian packages --------------------------------------------------------------------------
# gcc and libpq-dev build psycopg's C extension, which NetBox pins (psycopg[c]).
apt_packages=(postgresql redis-server libpq-dev gcc)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # A policy-rc.d that says no keeps the packages from starting system-wide services: ours run
  # privately. One that is already there is left as it is.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
timed "debian packages"
PG_DATA=$CACHE/postgres/$(pg_major)/data # now that PostgreSQL is surely installed

mkdir -p "$CACHE" "$RUN"
# PostgreSQL (its own user) needs to reach its socket directory in $RUN; secrets are files 0600.
chmod 0755 "$CACHE" "$RUN"
stop_all # leftovers of an interrupted run

# --- Python 3.12+ and the NetBox venv -----------------------------------------------------------
find_python() {
  local c
  for c in "${NETBOX_PYTHON:-}" /root/.pyenv/versions/3.12*/bin/python3 python3.13 python3.12 python3; do
    [ -n "$c" ] || continue
    command -v "$c" >/dev/null 2>&1 || continue
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
      command -v "$c"
      return
    fi
  done
  return 1
}
if [ ! -f "$VENV/.complete" ]; then
  python=$(find_python) || {
    log "NetBox $NETBOX_VERSION needs Python 3.12 or later; set NETBOX_PYTHON to one"
    exit 1
  }
  log "installing NetBox $NETBOX_VERSION from PyPI into $VENV (with $python)"
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
  pip=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
  "${pip[@]}" --no-deps "netbox==$NETBOX_VERSION"
  # NetBox pins psycopg[c], which compiles psycopg's C extension (a minute here); the
  # prebuilt psycopg[binary] of the same version is the same driver, so it takes its place.
  "$VENV/bin/python" - >"$VENV/requirements.txt" <<'EOF'
from importlib.metadata import requires
for r in requires("netbox"):
    if "extra ==" not in r:
        print(r.replace("psycopg[c,pool]", "psycopg[binary,pool]"))
EOF
  "${pip[@]}" -r "$VENV/requirements.txt"
  touch "$VENV/.complete"
  timed "pip install netbox (fresh)"
else
  timed "netbox venv (cached)"
fi
installed=$("$VENV/bin/netbox" version)
log "NetBox $installed, $("$VENV/bin/python" --version)"

# --- Configuration ------------------------------------------------------------------------------
# Secrets are made once per cache and kept out of every argv: Python reads and writes them.
secrets=$CACHE/netbox/secrets.json
if [ ! -f "$secrets" ]; then
  (umask 077 && "$VENV/bin/python" - "$secrets" <<'EOF'
import json, secrets, string, sys
alphabet = string.ascii_letters + string.digits + "!@#$%^&*(-_=+)"
pick = lambda n: "".join(secrets.choice(alphabet) for _ in range(n))
json.dump({"secret_key": pick(60), "pepper": pick(60), "db_password": secrets.token_hex(16)},
          open(sys.argv[1], "w"))
EOF
  )
fi
mkdir -p "$NETBOX_ROOT/conf"
cat >"$NETBOX_ROOT/conf/configuration.py" <<EOF
# Written by wgadm's tests/netbox/setup.sh: a NetBox for tests, on 127.0.0.1 only.
import json, os
_s = json.load(open("$secrets"))
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
DATABASES = {"default": {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": os.environ.get("WGADM_NETBOX_DB", "$TEST_DB"),
    "USER": "netbox", "PASSWORD": _s["db_password"],
    "HOST": "127.0.0.1", "PORT": "$PG_PORT", "CONN_MAX_AGE": 300,
}}
REDIS = {
    "tasks": {"HOST": "127.0.0.1", "PORT": $REDIS_PORT, "DATABASE": 0, "SSL": False},
    "caching": {"HOST": "127.0.0.1", "PORT": $REDIS_PORT, "DATABASE": 1, "SSL": False},
}
SECRET_KEY = _s["secret_key"]
API_TOKEN_PEPPERS = {1: _s["pepper"]}
# No traffic leaves the machine: no census, no release check, no plugin catalog.
ISOLATED_DEPLOYMENT = True
CENSUS_REPORTING_ENABLED = False
RELEASE_CHECK_URL = None
TIME_ZONE = "UTC"
EOF
: >"$NETBOX_ROOT/conf/__init__.py"
chmod -R go-rwx "$CACHE/netbox/secrets.json" "$NETBOX_ROOT/conf"
export NETBOX_ROOT
netbox() { "$VENV/bin/netbox" "$@"; }

# --- PostgreSQL: a private cluster ----------------------------------------------------------------
mkdir -p "$PG_SOCK" "$(dirname "$PG_DATA")"
chown postgres: "$PG_SOCK" "$(dirname "$PG_DATA")"
if [ ! -f "$PG_DATA/PG_VERSION" ]; then
  rm -rf "$PG_DATA"
  as_postgres "$(pg_bin initdb)" -D "$PG_DATA" -U postgres -E UTF8 --no-locale \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
fi
touch "$RUN/postgres.log" && chown postgres: "$RUN/postgres.log"
as_postgres "$(pg_bin pg_ctl)" -D "$PG_DATA" -l "$RUN/postgres.log" -w -t 60 \
  -o "-p $PG_PORT -k $PG_SOCK -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off" \
  start >/dev/null
timed "postgresql started"
"$VENV/bin/python" - "$secrets" <<'EOF' | psql_q -d postgres >/dev/null
import json, sys
pw = json.load(open(sys.argv[1]))["db_password"]
print("SELECT 1;")
print(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'netbox') THEN "
      f"CREATE ROLE netbox LOGIN CREATEDB PASSWORD '{pw}'; ELSE ALTER ROLE netbox PASSWORD '{pw}'; END IF; END $$;")
EOF

# --- Redis: a private, memory-only instance --------------------------------------------------------
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no --dir "$RUN" \
  --protected-mode yes --logfile "$RUN/redis.log" </dev/null >/dev/null 2>&1 &
echo $! >"$RUN/redis.pid"

# --- The migrated template database, once per NetBox version -------------------------------------------
if [ "$(psql_q -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$TEMPLATE_DB'")" != 1 ]; then
  log "migrating a new database for NetBox $NETBOX_VERSION (once; later runs clone it)"
  psql_q -d postgres -c "DROP DATABASE IF EXISTS netbox_migrating" -c "CREATE DATABASE netbox_migrating OWNER netbox"
  WGADM_NETBOX_DB=netbox_migrating netbox migrate --no-input >"$RUN/migrate.log" 2>&1 || {
    tail -20 "$RUN/migrate.log" >&2
    exit 1
  }
  psql_q -d postgres -c "ALTER DATABASE netbox_migrating RENAME TO $TEMPLATE_DB"
  timed "migrate (fresh)"
fi
psql_q -d postgres -c "DROP DATABASE IF EXISTS $TEST_DB" -c "CREATE DATABASE $TEST_DB TEMPLATE $TEMPLATE_DB OWNER netbox"
timed "database cloned from template"

# --- A superuser and a v2 API token (written straight to a 0600 file by Python) ------------------------
make_token="
from users.models import Token, User
u = User.objects.create_superuser(username='wgadm-test', email='wgadm-test@example.invalid', password=None)
t = Token(user=u, version=2, write_enabled=True, description='wgadm tests')
t.save()
open('$RUN/token', 'w').write('nbt_' + t.key + '.' + t.token)
"
if ! (umask 077; netbox shell --no-imports -c "$make_token" 2>"$RUN/token.log"); then
  cat "$RUN/token.log" >&2
  exit 1
fi
timed "superuser and token"

# --- NetBox itself: gunicorn (bundled) with a few workers, so concurrent requests are concurrent -------
# --preload imports NetBox once, before the workers fork, instead of once per worker.
(cd "$RUN" && exec "$VENV/bin/gunicorn" --bind "127.0.0.1:$NETBOX_PORT" --workers 3 --timeout 120 \
  --preload --no-control-socket netbox.wsgi </dev/null >"$RUN/netbox.log" 2>&1) &
echo $! >"$RUN/netbox.pid"
url=http://127.0.0.1:$NETBOX_PORT
# Any HTTP answer counts (without a token /api/status/ says 403): the server is up.
if ! "$VENV/bin/python" - "$url/api/status/" "$(cat "$RUN/netbox.pid")" <<'EOF'
import os, sys, time, urllib.error, urllib.request
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    try:
        os.kill(int(sys.argv[2]), 0)
    except OSError:
        sys.exit("NetBox (gunicorn) exited")
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2)
        sys.exit(0)
    except urllib.error.HTTPError:
        sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("NetBox did not answer within 90 s")
EOF
then
  tail -30 "$RUN/netbox.log" >&2
  exit 1
fi
timed "netbox answering"

cat >"$RUN/env" <<EOF
WGADM_TEST_NETBOX_URL=$url
WGADM_TEST_NETBOX_TOKEN_FILE=$RUN/token
WGADM_TEST_NETBOX_VERSION=$installed
EOF
step_start=$t0
timed total
log "NetBox $installed at $url (env in $RUN/env)"
