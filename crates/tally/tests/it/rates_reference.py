"""The rates service's reference: the dump read into DuckDB, and the
question answered in SQL (recursive CTE over the regions,
round(avg(price)), at least 3 prices a day). Used by tests/it/rates.rs and
bench/rates.py. The dump is read by examples/rates/dump.py (what the
loader uses too); the suite's PostgreSQL test checks that reader against
PostgreSQL running the whole dump."""
import os
import sys

import duckdb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../../examples/rates"))
import dump  # noqa: E402

SQL = """
WITH RECURSIVE ro(slug) AS (SELECT slug FROM regions WHERE slug = $o
                            UNION SELECT r.slug FROM regions r JOIN ro ON r.parent_slug = ro.slug),
     rd(slug) AS (SELECT slug FROM regions WHERE slug = $d
                  UNION SELECT r.slug FROM regions r JOIN rd ON r.parent_slug = rd.slug),
     o AS (SELECT code FROM ports WHERE code = $o OR parent_slug IN (SELECT slug FROM ro)),
     de AS (SELECT code FROM ports WHERE code = $d OR parent_slug IN (SELECT slug FROM rd)),
     days AS (SELECT CAST(unnest(generate_series(CAST($f AS DATE), CAST($t AS DATE), INTERVAL 1 DAY)) AS DATE) AS day)
SELECT strftime(days.day, '%Y-%m-%d'),
       CASE WHEN count(p.price) >= 3 THEN CAST(round(avg(p.price)) AS BIGINT) END
FROM days LEFT JOIN prices p ON p.day = days.day
     AND p.orig_code IN (SELECT code FROM o) AND p.dest_code IN (SELECT code FROM de)
GROUP BY days.day ORDER BY days.day
"""


def load(path):
    """A DuckDB connection holding the dump's ports, regions and prices, as
    PostgreSQL holds them after the whole dump (examples/rates/dump.py)."""
    tables = dump.read(path)
    db = duckdb.connect()
    db.execute("CREATE TABLE ports (code TEXT, name TEXT, parent_slug TEXT)")
    db.execute("CREATE TABLE regions (slug TEXT, name TEXT, parent_slug TEXT)")
    db.execute("CREATE TABLE prices (orig_code TEXT, dest_code TEXT, day DATE, price INTEGER)")
    db.executemany("INSERT INTO ports VALUES (?, ?, ?)", tables["ports"][1])
    db.executemany("INSERT INTO regions VALUES (?, ?, ?)", tables["regions"][1])
    db.executemany("INSERT INTO prices VALUES (?, ?, ?, ?)", tables["prices"][1])
    return db


def answer(db, q):
    """[(day, average_price or None)] for a question dict."""
    return db.execute(SQL, {"o": q["origin"], "d": q["destination"],
                            "f": q["date_from"], "t": q["date_to"]}).fetchall()
