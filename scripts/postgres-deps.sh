#!/usr/bin/env bash
# PostgreSQL for the tests (the read model on PostgreSQL, pg_dump/pg_restore, the production
# topology test), from Debian's registry: the `postgresql` package, only when initdb/pg_ctl
# (in /usr/lib/postgresql/<version>/bin) or pg_dump/pg_restore are missing. The tests start
# their own throwaway server on 127.0.0.1 (tests/postgres.py), so no cluster is created or
# started by the package. Without root (or apt) it says what is missing and carries on: the
# PostgreSQL tests then skip with that reason.
set -uo pipefail
have() {
  for tool in initdb pg_ctl pg_dump pg_restore; do
    compgen -G "/usr/lib/postgresql/*/bin/$tool" >/dev/null || return 1
  done
}
have && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages: postgresql"
  # Debian's postinst would create and start a "main" cluster on 5432: not wanted here (a
  # drop-in read by postgresql-common's createcluster.conf, so no conffile is touched).
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/onefamily-tests.conf
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  have || echo "WARNING: postgresql installed but initdb/pg_ctl not found in /usr/lib/postgresql." >&2
else
  echo "WARNING: missing system package (postgresql); install it with apt-get as root." >&2
fi
exit 0
