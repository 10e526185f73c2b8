#!/usr/bin/env bash
# One pgbench measurement of PostgreSQL 15 with its data directory under DIR:
# fresh initdb, pgbench -i -s 10, CHECKPOINT, TPC-B-like run, select-only run.
# Prints one JSON line. Run as root; PostgreSQL runs as `postgres`.
#
#   bench/volume_pgbench.sh LABEL DIR [SECONDS] [PORT]
set -euo pipefail
label="$1"; dir="$2"; secs="${3:-60}"; port="${4:-55432}"
bin=/usr/lib/postgresql/15/bin
as_pg() { runuser -u postgres -- "$@"; }
sock="$(mktemp -d /tmp/kura-pgbench-sock.XXXXXX)"; chown postgres "$sock"
data="$dir/pgdata"
rm -rf "$data"; mkdir -p "$dir"; chown postgres:postgres "$dir"
t0=$(date +%s.%N)
as_pg "$bin/initdb" -D "$data" -A trust >/dev/null
t1=$(date +%s.%N)
as_pg "$bin/pg_ctl" -D "$data" -o "-p $port -k $sock -c listen_addresses=''" -l "$sock/log" -w start >/dev/null
trap 'as_pg "$bin/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$sock"' EXIT
t2=$(date +%s.%N)
as_pg "$bin/pgbench" -h "$sock" -p "$port" -i -s 10 -q postgres >/dev/null 2>&1
t3=$(date +%s.%N)
as_pg "$bin/psql" -h "$sock" -p "$port" -qAt -c CHECKPOINT postgres >/dev/null
tpcb=$(as_pg "$bin/pgbench" -h "$sock" -p "$port" -c 4 -j 2 -T "$secs" postgres 2>/dev/null)
sel=$(as_pg "$bin/pgbench" -h "$sock" -p "$port" -c 4 -j 2 -T "$secs" -S postgres 2>/dev/null)
tps() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$1"; }
lat() { sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$1"; }
failed() { sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$1"; }
printf '{"label":"%s","tpcb_tps":%s,"tpcb_lat_ms":%s,"tpcb_failed":%s,"select_tps":%s,"select_lat_ms":%s,"initdb_s":%.2f,"load_s":%.2f}\n' \
  "$label" "$(tps "$tpcb")" "$(lat "$tpcb")" "$(failed "$tpcb")" "$(tps "$sel")" "$(lat "$sel")" \
  "$(echo "$t1 - $t0" | bc)" "$(echo "$t3 - $t2" | bc)"
