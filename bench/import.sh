#!/usr/bin/env bash
# Batch import throughput: one file of N price rows (default 10 M) imported
# whole by `tally import` into a release server (fsync on, the default),
# and by PostgreSQL's COPY into a table of the same columns, in the same
# run on the same disk. Also: the server's peak memory during the import
# (it stays flat whatever N is), and the same file with a bad last row
# (refused naming its line; nothing imported).
#
#   bench/import.sh [ROWS]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000000}
cargo build --release --quiet
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DIR=$(mktemp -d /tmp/tally-import-bench.XXXXXX)
chmod 755 "$DIR"
PGPORT=18542
PORT=18481
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  su postgres -c "$PG_BIN/pg_ctl -D $DIR/pg -m immediate stop" >/dev/null 2>&1 || true
  sleep 0.5
  rm -rf "$DIR"
}
trap cleanup EXIT

echo "generating $N rows..."
python3 - "$DIR/prices.csv" "$N" <<'PY'
import random, sys, datetime
path, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
ports = [f"{a}{b}{c}" for a in "ABCDEFGH" for b in "ABCDEFGH" for c in "XYZ"]
days = [(datetime.date(2016, 1, 1) + datetime.timedelta(d)).isoformat() + "T00:00:00Z" for d in range(366)]
with open(path, "w") as f:
    f.write("ts,orig_code,dest_code,price\n")
    for _ in range(n // 100000):
        f.write("".join(f"{rng.choice(days)},{rng.choice(ports)},{rng.choice(ports)},{rng.randint(100, 5000)}\n" for _ in range(100000)))
    f.write("".join(f"{rng.choice(days)},{rng.choice(ports)},{rng.choice(ports)},{rng.randint(100, 5000)}\n" for _ in range(n % 100000)))
PY
chmod 644 "$DIR/prices.csv"
BYTES=$(stat -c %s "$DIR/prices.csv")
echo "file: $N rows, $((BYTES / 1048576)) MiB"

# tally
target/release/tally serve --data-dir "$DIR/data" --listen 127.0.0.1:$PORT >"$DIR/out" 2>"$DIR/err" &
TALLY_PID=$!
until curl -sf http://127.0.0.1:$PORT/readyz >/dev/null; do sleep 0.1; done
RSS0=$(awk '/VmRSS/ {print $2}' /proc/$TALLY_PID/status)
T0=$(date +%s.%N)
target/release/tally import "$DIR/prices.csv" --stream prices --url http://127.0.0.1:$PORT --batch-id bench 2>/dev/null
T1=$(date +%s.%N)
HWM=$(awk '/VmHWM/ {print $2}' /proc/$TALLY_PID/status)
COUNT=$(curl -sf http://127.0.0.1:$PORT/v1/sql -H 'content-type: application/json' \
  -d '{"sql":"SELECT count(*) AS n FROM prices"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])')
TALLY_S=$(python3 -c "print(f'{$T1 - $T0:.2f}')")
echo "tally import: $COUNT rows in ${TALLY_S} s = $(python3 -c "print(f'{$N / ($T1 - $T0):,.0f}')") rows/s; server RSS before ${RSS0} KiB, peak ${HWM} KiB"

# The same file with its last row broken: refused, nothing imported.
cp "$DIR/prices.csv" "$DIR/bad.csv"
sed -i '$ s/,[0-9]*$/,cheap/' "$DIR/bad.csv"
T0=$(date +%s.%N)
if target/release/tally import "$DIR/bad.csv" --stream prices --url http://127.0.0.1:$PORT --batch-id bad 2>"$DIR/bad.err"; then
  echo "bad file imported: FAIL"; exit 1
fi
T1=$(date +%s.%N)
COUNT2=$(curl -sf http://127.0.0.1:$PORT/v1/sql -H 'content-type: application/json' \
  -d '{"sql":"SELECT count(*) AS n FROM prices"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])')
echo "bad last row: refused after $(python3 -c "print(f'{$T1 - $T0:.2f}')") s: $(grep -m1 -i error "$DIR/bad.err" | cut -c1-200); rows after: $COUNT2"
rm -f "$DIR/bad.csv"
kill $TALLY_PID; wait $TALLY_PID 2>/dev/null || true

# PostgreSQL COPY (fsync and synchronous_commit on, the defaults).
mkdir "$DIR/pg" "$DIR/sock" && chown postgres "$DIR/pg" "$DIR/sock" && touch "$DIR/pg.log" && chown postgres "$DIR/pg.log"
su postgres -c "$PG_BIN/initdb -D $DIR/pg -A trust" >/dev/null
su postgres -c "$PG_BIN/pg_ctl -D $DIR/pg -o '-p $PGPORT -k $DIR/sock -c max_wal_size=4GB' -l $DIR/pg.log start" >/dev/null
until su postgres -c "psql -h $DIR/sock -p $PGPORT -c 'select 1'" >/dev/null 2>&1; do sleep 0.2; done
su postgres -c "psql -h $DIR/sock -p $PGPORT -q -c 'CREATE TABLE prices (ts timestamptz, orig_code text, dest_code text, price double precision)'"
T0=$(date +%s.%N)
su postgres -c "psql -h $DIR/sock -p $PGPORT -q -c \"COPY prices FROM '$DIR/prices.csv' WITH (FORMAT csv, HEADER true)\""
T1=$(date +%s.%N)
PG_S=$(python3 -c "print(f'{$T1 - $T0:.2f}')")
echo "PostgreSQL COPY: $N rows in ${PG_S} s = $(python3 -c "print(f'{$N / ($T1 - $T0):,.0f}')") rows/s"
echo "tally / PostgreSQL rows/s: $(python3 -c "print(f'{$PG_S / $TALLY_S:.2f}')")"
