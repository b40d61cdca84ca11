# Sourced by setup.sh and test.sh: where the Zabbix test rig lives and the ports it uses. The
# test runs PostgreSQL, the Zabbix server and the frontend on 127.0.0.1 inside a network namespace
# of its own, so they cannot clash with services of the machine; the ports still differ from the
# standard ones (5432, 10050, 10051) so that nothing is confused with a real installation.
# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this file
ZBX_RIG=${ZBX_RIG:-/var/lib/wgadm-zabbix-test}   # the prepared database cluster (kept between runs)
ZBX_GOLDEN=$ZBX_RIG/pgdata                        # schema loaded, never started by the test itself
ZBX_PG_PORT=${ZBX_PG_PORT:-15432}
ZBX_SERVER_PORT=${ZBX_SERVER_PORT:-10151}
ZBX_AGENT_PORT=${ZBX_AGENT_PORT:-10150}
ZBX_WEB_PORT=${ZBX_WEB_PORT:-10180}
ZBX_DB_PASSWORD=wgadm-zabbix-test                 # a throwaway database on 127.0.0.1, only while a test runs
ZBX_FRONTEND_CONF=/etc/zabbix/zabbix.conf.php     # fixed by Debian's frontend (CConfigFile), 6.0 and 7.0
ZBX_MARK='// Written by wgadm tests/zabbix/setup.sh'

# The newest installed PostgreSQL's programs (initdb, postgres): Debian keeps them off PATH.
pg_bin() {
  local d best=
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && best=$d; done
  [ -n "$best" ] || { echo "zabbix: no PostgreSQL server installed (run tests/zabbix/setup.sh)" >&2; return 1; }
  echo "$best"
}

# The frontend's database settings for the throwaway Zabbix of test.sh (PHP, on stdout): the
# database, server and frontend all on 127.0.0.1 in the management namespace.
zbx_frontend_conf() {
  cat <<PHP
<?php
$ZBX_MARK: the frontend of the throwaway Zabbix that
// tests/zabbix/test.sh starts on 127.0.0.1 (database on port $ZBX_PG_PORT, server on $ZBX_SERVER_PORT).
\$DB['TYPE']     = 'POSTGRESQL';
\$DB['SERVER']   = '127.0.0.1';
\$DB['PORT']     = '$ZBX_PG_PORT';
\$DB['DATABASE'] = 'zabbix';
\$DB['USER']     = 'zabbix';
\$DB['PASSWORD'] = '$ZBX_DB_PASSWORD';
\$DB['SCHEMA']   = '';
\$DB['ENCRYPTION'] = false;
\$DB['KEY_FILE'] = '';
\$DB['CERT_FILE'] = '';
\$DB['CA_FILE'] = '';
\$DB['VERIFY_HOST'] = false;
\$DB['CIPHER_LIST'] = '';
\$DB['VAULT_URL'] = '';
\$DB['VAULT_DB_PATH'] = '';
\$DB['VAULT_TOKEN'] = '';
\$DB['DOUBLE_IEEE754'] = true;
\$ZBX_SERVER      = '127.0.0.1';
\$ZBX_SERVER_PORT = '$ZBX_SERVER_PORT';
\$ZBX_SERVER_NAME = 'wgadm test';
\$IMAGE_FORMAT_DEFAULT = IMAGE_FORMAT_PNG;
PHP
}
