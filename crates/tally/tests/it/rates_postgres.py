"""The rates data set's dump run by PostgreSQL itself (psql -f, the whole
file, its later DELETE and INSERT included), then the rates question
answered there for every day the dump's edge cases touch: Jan 3 (no prices
left) and Jan 4 (one price left), for port and region pairs around them.

Starts a throw-away PostgreSQL (initdb in a temporary directory, a Unix
socket there, no TCP port; as the `postgres` user when run as root, since
initdb refuses root) and removes it after.

  python3 rates_postgres.py DUMP   ->  {"questions": [{"q": {...}, "days":
      [{"day", "average_price"}]}], "daily": [{"day", "n", "sum"}]}
"""
import glob
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile

SQL = """
WITH RECURSIVE ro(slug) AS (SELECT slug FROM regions WHERE slug = :'o'
                            UNION SELECT r.slug FROM regions r JOIN ro ON r.parent_slug = ro.slug),
     rd(slug) AS (SELECT slug FROM regions WHERE slug = :'d'
                  UNION SELECT r.slug FROM regions r JOIN rd ON r.parent_slug = rd.slug),
     o AS (SELECT code FROM ports WHERE code = :'o' OR parent_slug IN (SELECT slug FROM ro)),
     de AS (SELECT code FROM ports WHERE code = :'d' OR parent_slug IN (SELECT slug FROM rd)),
     days AS (SELECT generate_series(date :'f', date :'t', interval '1 day')::date AS day),
     answer AS (
       SELECT days.day,
              CASE WHEN count(p.price) >= 3 THEN round(avg(p.price))::bigint END AS average_price
       FROM days LEFT JOIN prices p ON p.day = days.day
            AND p.orig_code IN (SELECT code FROM o) AND p.dest_code IN (SELECT code FROM de)
       GROUP BY days.day)
SELECT json_agg(json_build_object('day', to_char(day, 'YYYY-MM-DD'), 'average_price', average_price)
                ORDER BY day)
FROM answer;
"""


def main():
    dump = sys.argv[1]
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries:
        sys.exit("PostgreSQL is not installed (Debian's postgresql package)")
    bindir = binaries[-1]
    root = os.geteuid() == 0
    run_as = ["runuser", "-u", "postgres", "--"] if root else []
    work = tempfile.mkdtemp(prefix="tally-pg-")
    try:
        data, sock = os.path.join(work, "data"), work
        script = os.path.join(work, "dump.sql")
        opener = gzip.open if dump.endswith(".gz") else open
        with opener(dump, "rb") as src, open(script, "wb") as dst:
            shutil.copyfileobj(src, dst)
        if root:
            shutil.chown(work, "postgres")
            shutil.chown(script, "postgres")
        pg = lambda *a, **kw: subprocess.run(run_as + list(a), check=True, capture_output=True, text=True, **kw)
        pg(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
        pg(f"{bindir}/pg_ctl", "-D", data, "-w", "-l", os.path.join(work, "log"), "start",
           "-o", f"-c listen_addresses='' -k {sock} -c fsync=off")
        try:
            psql = [f"{bindir}/psql", "-h", sock, "-U", "postgres", "-d", "postgres", "-X", "-q",
                    "-v", "ON_ERROR_STOP=1"]
            pg(*psql, "-f", script)
            query = lambda sql, **v: pg(*psql, "-At", *sum((["-v", f"{k}={x}"] for k, x in v.items()), []),
                                       input=sql).stdout.strip()
            # Places around the edge days: pairs priced on Jan 2 and Jan 5,
            # the pair Jan 4 keeps, and the regions the ports are in.
            pairs = query("""SELECT DISTINCT orig_code || ' ' || dest_code FROM prices
                             WHERE day IN (date '2016-01-02', date '2016-01-05')
                             ORDER BY 1 LIMIT 6""").split("\n")
            pairs = [p.split(" ") for p in pairs if p]
            kept = query("SELECT orig_code || ' ' || dest_code FROM prices WHERE day = date '2016-01-04'")
            pairs += [p.split(" ") for p in kept.split("\n") if p]
            parent = dict(r.split("|") for r in query("SELECT code, parent_slug FROM ports").split("\n"))
            places = []
            for o, d in pairs:
                places += [(o, d), (parent[o], parent[d]), (o, parent[d])]
            places += [("china_main", "northern_europe"), ("CNSGH", "north_europe_main")]
            ranges = [("2016-01-01", "2016-01-06"), ("2016-01-03", "2016-01-03"),
                      ("2016-01-04", "2016-01-04"), ("2016-01-03", "2016-01-04")]
            out = []
            for o, d in dict.fromkeys(places):
                for f, t in ranges:
                    days = json.loads(query(SQL, o=o, d=d, f=f, t=t))
                    out.append({"q": {"date_from": f, "date_to": t, "origin": o, "destination": d},
                                "days": days})
            daily = json.loads(query("""SELECT json_agg(json_build_object('day', to_char(day, 'YYYY-MM-DD'),
                                            'n', n, 'sum', s) ORDER BY day)
                                        FROM (SELECT day, count(*) AS n, sum(price) AS s FROM prices
                                              WHERE day BETWEEN date '2016-01-01' AND date '2016-01-06'
                                              GROUP BY day) d"""))
            print(json.dumps({"questions": out, "daily": daily}))
        finally:
            subprocess.run(run_as + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                           capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
