#!/bin/sh
# The outbox's SQL under pgbench, on a database of its own that is dropped afterwards.
#
#   bench/pgbench/run.sh [clients] [seconds] [rows per commit]    # default 16 clients, 20 s, 1 row
#
# Creates gw_pgbench_<pid> on $PGHOST:$PGPORT (default 127.0.0.1:5432, user postgres),
# migrates it with `gateway db migrate` (the gateway's own schema), loads the real
# page_view item (item.json) as the template row, runs enqueue.sql and deliver.sql
# at 100:1 (one claim and one settle per 100 items, as the dispatcher does with
# batch_size 100; with 10 rows per commit, enqueue10.sql at 10:1, several requests'
# items in one transaction as a group commit would write them), and prints pgbench's figures with the WAL written, PostgreSQL's
# CPU and the outbox's row counts over the run. Run it from the repository root.
set -eu
clients=${1:-16}
seconds=${2:-20}
rows=${3:-1}
case $rows in 1) enqueue=enqueue.sql weight=100 ;; 10) enqueue=enqueue10.sql weight=10 ;; *) echo "rows: 1 or 10" >&2; exit 2 ;; esac
here=$(dirname "$0")
python=${PYTHON:-.venv/bin/python}
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
db=gw_pgbench_$$
createdb -T template0 "$db"
trap 'kill "${sampler:-}" 2>/dev/null; dropdb --if-exists --force "$db"' EXIT
GATEWAY_STORAGE_URL="postgresql://$PGUSER@$PGHOST:$PGPORT/$db" "$python" -m gateway.cli db migrate --config examples/container.yaml
psql -q -d "$db" -v item="$(cat "$here/item.json")" <<'SQL'
CREATE TABLE template AS SELECT 'http_request'::text AS destination, 'forward_to_sink'::text AS batch_key,
    'forward_to_sink'::text AS tag, :'item'::json AS item;
SQL
# PostgreSQL's CPU over the run: every postgres process's CPU time, sampled every 0.1 s so that the
# backends pgbench starts and ends are counted too (each up to its last sample).
cpu_file=$(mktemp)
"$python" - > "$cpu_file" <<'PY' &
import os, signal, sys, time
hz, seen, first = os.sysconf("SC_CLK_TCK"), {}, {}
def report(*_):
    print(f"{sum(seen[p] - first.get(p, 0.0) for p in seen):.2f}")
    sys.exit(0)
signal.signal(signal.SIGTERM, report)
start = True
while True:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            text = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        if "(postgres)" in text:
            fields = text.rsplit(")", 1)[1].split()
            seen[pid] = (int(fields[11]) + int(fields[12])) / hz
            if start:
                first[pid] = seen[pid]
    start = False
    time.sleep(0.1)
PY
sampler=$!
sleep 0.5
lsn0=$(psql -Atq -d "$db" -c "SELECT pg_current_wal_lsn()")
sync0=$(psql -Atq -d "$db" -c "SELECT wal_sync FROM pg_stat_wal")
pgbench -n -r -c "$clients" -j 2 -T "$seconds" -f "$here/$enqueue@$weight" -f "$here/deliver.sql@1" "$db"
kill "$sampler"; wait "$sampler" || true
pg_cpu=$(cat "$cpu_file"); rm -f "$cpu_file"
sleep 1
psql -Atq -d "$db" <<SQL
SELECT 'outbox rows: ' || count(*) || ', delivered ' || count(*) FILTER (WHERE status = 'delivered') FROM outbox;
SELECT 'WAL bytes per row: ' || round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$lsn0') / count(*)) FROM outbox;
SELECT 'WAL fsyncs per row: ' || round((SELECT wal_sync - $sync0 FROM pg_stat_wal)::numeric / count(*), 3) FROM outbox;
SELECT 'outbox heap + indexes bytes per row: ' || round(pg_total_relation_size('outbox') / count(*)) FROM outbox;
SELECT 'rows inserted, updated, HOT: ' || n_tup_ins || ', ' || n_tup_upd || ', ' || n_tup_hot_upd
    || '; autovacuums: ' || autovacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox';
SELECT 'outbox_due bytes: ' || pg_relation_size('outbox_due') || ' for ' || count(*) FILTER (WHERE status = 'pending')
    || ' pending rows' FROM outbox;
SELECT 'the claim after the run, twice (the first marks dead index entries, the second reads past them):';
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) SELECT id FROM outbox
    WHERE destination = 'http_request' AND batch_key = 'forward_to_sink' AND status = 'pending'
      AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until <= now())
    ORDER BY next_attempt_at, id LIMIT 100;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id FROM outbox
    WHERE destination = 'http_request' AND batch_key = 'forward_to_sink' AND status = 'pending'
      AND next_attempt_at <= now() AND (lease_until IS NULL OR lease_until <= now())
    ORDER BY next_attempt_at, id LIMIT 100;
VACUUM FULL outbox;
SELECT 'after VACUUM FULL, heap + indexes bytes per row: ' || round(pg_total_relation_size('outbox') / count(*))
    || ' (heap ' || round(pg_relation_size('outbox') / count(*)) || ')' FROM outbox;
SQL
awk -v c="$pg_cpu" -v s="$seconds" 'BEGIN { printf "postgres CPU: %.2f s over %s s, %.2f cores\n", c, s, c / s }'
