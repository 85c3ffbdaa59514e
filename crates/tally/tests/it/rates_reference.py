"""The rates service's reference: the dump read into DuckDB by its own
reader, and the question answered in SQL (recursive CTE over the regions,
round(avg(price)), at least 3 prices a day). Used by tests/it/rates.rs and
bench/rates.py."""
import duckdb

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


def load(dump):
    """A DuckDB connection holding the dump's ports, regions and prices."""
    tables, cur = {}, None
    for line in open(dump, encoding="utf-8"):
        line = line.rstrip("\n")
        if cur is None:
            if line.startswith("COPY "):
                cur = line.split()[1]
                tables[cur] = []
        elif line == "\\.":
            cur = None
        else:
            tables[cur].append([None if v == "\\N" else v for v in line.split("\t")])
    db = duckdb.connect()
    db.execute("CREATE TABLE ports (code TEXT, name TEXT, parent_slug TEXT)")
    db.execute("CREATE TABLE regions (slug TEXT, name TEXT, parent_slug TEXT)")
    db.execute("CREATE TABLE prices (orig_code TEXT, dest_code TEXT, day DATE, price INTEGER)")
    db.executemany("INSERT INTO ports VALUES (?, ?, ?)", tables["ports"])
    db.executemany("INSERT INTO regions VALUES (?, ?, ?)", tables["regions"])
    db.executemany("INSERT INTO prices VALUES (?, ?, ?, ?)", tables["prices"])
    return db


def answer(db, q):
    """[(day, average_price or None)] for a question dict."""
    return db.execute(SQL, {"o": q["origin"], "d": q["destination"],
                            "f": q["date_from"], "t": q["date_to"]}).fetchall()
