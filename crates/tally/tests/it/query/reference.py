# The reference side of the query differential tests: the same events loaded
# into DuckDB, and an independent implementation of tally's time-series API
# semantics (documented in docs/query.md) written as DuckDB SQL.
#
# usage: reference.py DBFILE load STREAM=CSV... | DBFILE run QUERIES.json
# `run` prints {"sql": [rows...], "ts": [answers...]} as JSON.
import duckdb, json, sys

db = sys.argv[1]
con = duckdb.connect(db)
con.execute("SET TimeZone = 'UTC'")


def q(s):
    return "'" + s.replace("'", "''") + "'"


def ident(s):
    return '"' + s.replace('"', '""') + '"'


def load(specs):
    for spec in specs:
        name, path, cols = spec.split("=", 2)
        types = dict(c.split(":") for c in cols.split(","))
        # ts arrives as epoch microseconds.
        duck_types = {"ts_us": "BIGINT"}
        for c, t in types.items():
            duck_types[c] = "DOUBLE" if t == "value" else "VARCHAR"
        colspec = "{" + ",".join(f"{q(k)}: {q(v)}" for k, v in duck_types.items()) + "}"
        select = ", ".join(ident(c) for c in types)
        con.execute(
            f"CREATE OR REPLACE TABLE {ident(name)} AS SELECT make_timestamp(ts_us) AS ts, {select} "
            f"FROM read_csv({q(path)}, header=true, columns={colspec})"
        )


def agg_sql(a):
    if a in ("count", "count()", "count(*)"):
        return "count(*)", "exact"
    name, f = a[:-1].split("(", 1)
    c = ident(f)
    if name == "count":
        return f"count({c})", "exact"
    if name in ("sum", "avg", "min", "max"):
        return f"{name}({c})", "exact"
    if name == "uniq":
        return f"count(DISTINCT {c})", "uniq"
    p = int(name[1:]) / 100
    qs = [max(0.0, p - 0.02), min(1.0, p + 0.02), max(0.0, p - 0.1), min(1.0, p + 0.1)]
    parts = [f"quantile_cont({c}, {x})::DOUBLE" for x in qs]
    parts += [f"min({c})::DOUBLE", f"max({c})::DOUBLE", f"count({c})::DOUBLE"]
    return f"CASE WHEN count({c}) = 0 THEN NULL ELSE list_value({', '.join(parts)}) END", "quantile"


def lit(v):
    return q(v) if isinstance(v, str) else repr(float(v))


def filt(f, trees):
    c, op, v = ident(f["field"]), f["op"], f.get("value")
    if op == "=":
        return f"{c} = {lit(v)}"
    if op == "!=":
        return f"({c} <> {lit(v)} OR {c} IS NULL)"
    if op == "in":
        return f"{c} IN ({', '.join(map(lit, v))})"
    if op == "not_in":
        return f"({c} NOT IN ({', '.join(map(lit, v))}) OR {c} IS NULL)"
    if op == "prefix":
        return f"starts_with({c}, {q(v)})"
    if op == "contains":
        return f"contains({c}, {q(v)})"
    if op in (">", ">=", "<", "<="):
        return f"{c} {op} {lit(v)}"
    if op == "exists":
        return f"{c} IS NOT NULL"
    if op == "missing":
        return f"{c} IS NULL"
    if op == "under":
        key, parent = trees[f["table"]]
        t = ident(f["table"])
        return (
            f"{c} IN (WITH RECURSIVE d(k) AS (SELECT {q(v)} UNION "
            f"SELECT t.{ident(key)} FROM {t} t JOIN d ON t.{ident(parent)} = d.k) SELECT k FROM d)"
        )
    raise ValueError(op)


INTERVALS = {
    "1m": "1 minute", "5m": "5 minutes", "15m": "15 minutes", "30m": "30 minutes",
    "1h": "1 hour", "3h": "3 hours", "6h": "6 hours", "12h": "12 hours",
    "1d": "1 day", "1w": "7 days", "1mo": "1 month",
}


def bucket_sql(interval, tz, col="ts"):
    i = INTERVALS[interval]
    if tz in (None, "UTC"):
        return f"epoch_us(time_bucket(INTERVAL '{i}', {col}))"
    return f"epoch_us(time_bucket(INTERVAL '{i}', timezone('UTC', {col}), {q(tz)}))"


def timeseries(r, trees):
    aggs = [agg_sql(a) for a in (r.get("aggregates") or ["count"])]
    names = r.get("aggregates") or ["count"]
    where = [f"ts >= make_timestamp({r['from_us']})", f"ts < make_timestamp({r['to_us']})"]
    where += [filt(f, trees) for f in r.get("filters", [])]
    base = f"FROM {ident(r['stream'])} WHERE " + " AND ".join(where)
    sel = ", ".join(f"{s} AS a{i}" for i, (s, _) in enumerate(aggs))
    groups = r.get("group_by", [])
    other = r.get("other", True)
    fill = r.get("fill", "null")

    def empty(zero):
        out = []
        for (s, kind), n in zip(aggs, names):
            if n.startswith("count") or kind == "uniq":
                out.append(0)
            else:
                out.append(0 if zero else None)
        return out

    gcols, top = [], []
    if groups:
        dims = [ident(g) for g in groups]
        rank = names.index(r["order_by"]) if r.get("order_by") else 0
        order = ", ".join(f"{d} ASC NULLS FIRST" for d in dims)
        top = con.execute(
            f"SELECT {', '.join(dims)}, {aggs[rank][0]} AS r {base} GROUP BY ALL "
            f"ORDER BY r DESC NULLS LAST, {order} LIMIT {r.get('limit', 10)}"
        ).fetchall()
        conds = []
        for row in top:
            parts = [
                f"{d} IS NOT DISTINCT FROM {('NULL' if v is None else q(v))}"
                for d, v in zip(dims, row[: len(dims)])
            ]
            conds.append("(" + " AND ".join(parts) + ")")
        match = " OR ".join(conds) or "FALSE"
        gcols = [f"CASE WHEN {match} THEN {d} END AS g{i}" for i, d in enumerate(dims)]
        gcols.append(f"NOT ({match}) AS is_other")
    ng = len(groups)

    def key(row):
        if not groups:
            return (False, ())
        return (bool(row[ng]), tuple(row[:ng]))

    series = {}
    buckets = None
    if r.get("interval"):
        b = bucket_sql(r["interval"], r.get("timezone"))
        gsel = ", ".join([f"{b} AS b"] + gcols)
        for row in con.execute(f"SELECT {gsel}, {sel} {base} GROUP BY ALL").fetchall():
            k = key(row[1:])
            if k[0] and not other:
                continue
            series.setdefault(k, {})[row[0]] = list(row[1 + (ng + 1 if groups else 0):])
        bx = bucket_sql(r["interval"], r.get("timezone"), "x")
        buckets = [
            x[0]
            for x in con.execute(
                f"SELECT DISTINCT {bx} FROM generate_series(make_timestamp({r['from_us']}), "
                f"make_timestamp({r['to_us']} - 1), INTERVAL '1 minute') t(x) ORDER BY 1"
            ).fetchall()
        ]
    totals = {}
    if groups or not r.get("interval"):
        gsel = ", ".join(gcols) + ", " if gcols else ""
        tail = " GROUP BY ALL" if gcols else ""
        for row in con.execute(f"SELECT {gsel}{sel} {base}{tail}").fetchall():
            k = key(row)
            if k[0] and not other:
                continue
            totals[k] = list(row[(ng + 1 if groups else 0):])
    grand = list(con.execute(f"SELECT {sel} {base}").fetchone())

    order = [(False, tuple(row[:ng])) for row in top] if groups else [(False, ())]
    if groups and other:
        order.append((True, tuple([None] * ng)))
    out = []
    for k in order:
        pts = series.get(k, {})
        t = totals.get(k)
        if k[0] and not pts and t is None:
            continue
        s = {}
        if groups:
            s["group"] = None if k[0] else dict(zip(groups, k[1]))
            s["other"] = k[0]
        if buckets is not None:
            points = []
            for bu in buckets:
                vals = pts.get(bu)
                if vals is None:
                    if fill == "none":
                        continue
                    vals = empty(fill == "zero")
                points.append({"t": bu, **dict(zip(names, vals))})
            s["points"] = points
        if t is None:
            t = grand if not groups else empty(True)
        s["totals"] = dict(zip(names, t))
        out.append(s)
    return {"series": out, "totals": dict(zip(names, grand)),
            "kinds": {n: kind for n, (_, kind) in zip(names, aggs)}}


if sys.argv[2] == "load":
    load(sys.argv[3:])
    con.close()
else:
    spec = json.load(open(sys.argv[3]))
    trees = {k: tuple(v) for k, v in spec.get("trees", {}).items()}
    for name, path in spec.get("tables", {}).items():
        con.execute(f"CREATE OR REPLACE TABLE {ident(name)} AS SELECT * FROM read_csv({q(path)}, header=true, all_varchar=true)")
    res = {"sql": [], "ts": []}
    for s in spec["sql"]:
        res["sql"].append([list(r) for r in con.execute(s).fetchall()])
    for r in spec["ts"]:
        res["ts"].append(timeseries(r, trees))
    print(json.dumps(res, default=str))
