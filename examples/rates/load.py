#!/usr/bin/env python3
"""Loads the rates data set (a PostgreSQL dump with COPY blocks for ports,
regions and prices) into a running tally:

  ports   -> dimension table `ports`   (code, name, parent_slug)
  regions -> dimension table `regions` (a tree: key=slug, parent=parent_slug)
  prices  -> stream `prices`: one event per price, the day as event time
             (midnight UTC), orig_code and dest_code as dimensions, price as
             a value; imported as one atomic batch (POST /v1/import).

  python3 examples/rates/load.py [URL] [DUMP]
  (defaults: http://127.0.0.1:8080 and rates.sql.gz beside this script, the
  data set shipped with tally; TALLY_TOKEN: an API key with the admin
  scope, when keys are configured)

The dump is read as PostgreSQL runs it (dump.py): its COPY blocks, then the
statements after them that change prices (the data set deletes Jan 3 and
cuts Jan 4 to one price), so tally holds what PostgreSQL would. A statement
the reader does not understand stops the load before anything is sent,
naming it.
"""
import csv
import io
import hashlib
import json
import os
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dump as pgdump  # noqa: E402


def request(url, method, body, content_type):
    req = urllib.request.Request(url, data=body, method=method)
    req.add_header("content-type", content_type)
    token = os.environ.get("TALLY_TOKEN")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req) as resp:
        return json.load(resp)


def to_csv(columns, rows):
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    w.writerows(["" if v is None else v for v in r] for r in rows)
    return out.getvalue().encode()


def main():
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "rates.sql.gz")
    try:
        blocks = pgdump.read(path)
    except (pgdump.DumpError, OSError) as e:
        sys.exit(f"load.py: {path}: {e}; nothing was loaded")
    missing = [t for t in ("ports", "regions", "prices") if t not in blocks]
    if missing:
        sys.exit(f"load.py: {path} has no COPY block for {', '.join(missing)}; nothing was loaded")
    cols, rows = blocks["prices"]
    if cols != ["orig_code", "dest_code", "day", "price"]:
        sys.exit(f"load.py: prices has columns {cols}, not orig_code, dest_code, day, price; nothing was loaded")
    cols, rows = blocks["ports"]
    request(f"{url}/v1/tables/ports?text=true", "PUT", to_csv(cols, rows), "text/csv")
    cols, rows = blocks["regions"]
    request(f"{url}/v1/tables/regions?key=slug&parent=parent_slug&text=true", "PUT", to_csv(cols, rows), "text/csv")
    cols, rows = blocks["prices"]
    # One atomic batch, once: the batch id names the dump's content, so
    # loading the same dump again imports nothing twice.
    body = to_csv(["orig_code", "dest_code", "ts", "price"], [[o, d, f"{day}T00:00:00Z", p] for o, d, day, p in rows])
    batch = "rates-dump-" + hashlib.sha256(body).hexdigest()[:16]
    r = request(f"{url}/v1/import/prices?batch_id={batch}", "POST", body, "text/csv")
    print(json.dumps({"ports": len(blocks["ports"][1]), "regions": len(blocks["regions"][1]), "prices": r["rows"], "outcome": r["outcome"]}))


if __name__ == "__main__":
    main()
