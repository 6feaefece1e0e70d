#!/bin/sh
# The outbox's SQL under pgbench, on a database of its own that is dropped afterwards.
#
#   bench/pgbench/run.sh [clients] [seconds]      # default 16 clients, 20 s
#
# Creates gw_pgbench_<pid> on $PGHOST:$PGPORT (default 127.0.0.1:5432, user postgres),
# migrates it with `gateway db migrate` (the gateway's own schema), loads the real
# page_view item (item.json) as the template row, runs enqueue.sql and deliver.sql
# at 100:1 (one claim and one settle per 100 items, as the dispatcher does with
# batch_size 100), and prints pgbench's figures with the WAL written, PostgreSQL's
# CPU and the outbox's row counts over the run. Run it from the repository root.
set -eu
clients=${1:-16}
seconds=${2:-20}
here=$(dirname "$0")
python=${PYTHON:-.venv/bin/python}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
db=gw_pgbench_$$
createdb -T template0 "$db"
trap 'dropdb --if-exists --force "$db"' EXIT
GATEWAY_STORAGE_URL="postgresql://$PGUSER@$PGHOST:$PGPORT/$db" "$python" -m gateway.cli db migrate --config examples/container.yaml
psql -q -d "$db" -v item="$(cat "$here/item.json")" <<'SQL'
CREATE TABLE template AS SELECT 'http_request'::text AS destination, 'forward_to_sink'::text AS batch_key,
    'forward_to_sink'::text AS tag, :'item'::json AS item;
SQL
pg_cpu() {  # CPU seconds of every postgres process
    for stat in /proc/[0-9]*/stat; do cat "$stat" 2>/dev/null; done |
        awk -v hz="$(getconf CLK_TCK)" '$2 == "(postgres)" { t += $14 + $15 } END { printf "%.2f", t / hz }'
}
lsn0=$(psql -Atq -d "$db" -c "SELECT pg_current_wal_lsn()")
sync0=$(psql -Atq -d "$db" -c "SELECT wal_sync FROM pg_stat_wal")
cpu0=$(pg_cpu)
pgbench -n -c "$clients" -j 2 -T "$seconds" -f "$here/enqueue.sql@100" -f "$here/deliver.sql@1" "$db"
cpu1=$(pg_cpu)
sleep 1
psql -Atq -d "$db" <<SQL
SELECT 'outbox rows: ' || count(*) || ', delivered ' || count(*) FILTER (WHERE status = 'delivered') FROM outbox;
SELECT 'WAL bytes per row: ' || round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0') / count(*)) FROM outbox;
SELECT 'WAL fsyncs per row: ' || round((SELECT wal_sync - $sync0 FROM pg_stat_wal) / count(*), 3) FROM outbox;
SELECT 'outbox heap + indexes bytes per row: ' || round(pg_total_relation_size('outbox') / count(*)) FROM outbox;
SELECT 'rows inserted, updated, HOT: ' || n_tup_ins || ', ' || n_tup_upd || ', ' || n_tup_hot_upd
    FROM pg_stat_user_tables WHERE relname = 'outbox';
SQL
awk -v a="$cpu0" -v b="$cpu1" -v s="$seconds" 'BEGIN { printf "postgres CPU: %.2f s over %s s, %.2f cores\n", b - a, s, (b - a) / s }'
