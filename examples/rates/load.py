#!/usr/bin/env python3
"""Loads the rates data set (a PostgreSQL dump with COPY blocks for ports,
regions and prices) into a running tally:

  ports   -> dimension table `ports`   (code, name, parent_slug)
  regions -> dimension table `regions` (a tree: key=slug, parent=parent_slug)
  prices  -> stream `prices`: one event per price, the day as event time
             (midnight UTC), orig_code and dest_code as dimensions, price as
             a value; imported as one atomic batch (POST /v1/import).

  python3 examples/rates/load.py [URL] [DUMP]
  (defaults: http://127.0.0.1:8080 and ../shared/data/xeneta/rates.sql;
  TALLY_TOKEN: an API key with the admin scope, when keys are configured)
"""
import csv
import io
import hashlib
import json
import os
import sys
import urllib.request


def copy_blocks(path):
    """{table: (columns, rows)} from the dump's `COPY t (cols) FROM stdin;`
    blocks; `\\N` is NULL (None)."""
    blocks, current = {}, None
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if current is None:
                if line.startswith("COPY ") and line.endswith("FROM stdin;"):
                    name = line.split()[1]
                    cols = line[line.index("(") + 1 : line.index(")")].split(", ")
                    current = (name, cols, [])
                continue
            if line == "\\.":
                blocks[current[0]] = (current[1], current[2])
                current = None
                continue
            current[2].append([None if v == "\\N" else v for v in line.split("\t")])
    return blocks


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
    dump = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "../../../shared/data/xeneta/rates.sql")
    blocks = copy_blocks(dump)
    cols, rows = blocks["ports"]
    request(f"{url}/v1/tables/ports?text=true", "PUT", to_csv(cols, rows), "text/csv")
    cols, rows = blocks["regions"]
    request(f"{url}/v1/tables/regions?key=slug&parent=parent_slug&text=true", "PUT", to_csv(cols, rows), "text/csv")
    cols, rows = blocks["prices"]
    assert cols == ["orig_code", "dest_code", "day", "price"], cols
    # One atomic batch, once: the batch id names the dump's content, so
    # loading the same dump again imports nothing twice.
    body = to_csv(["orig_code", "dest_code", "ts", "price"], [[o, d, f"{day}T00:00:00Z", p] for o, d, day, p in rows])
    batch = "rates-dump-" + hashlib.sha256(body).hexdigest()[:16]
    r = request(f"{url}/v1/import/prices?batch_id={batch}", "POST", body, "text/csv")
    print(json.dumps({"ports": len(blocks["ports"][1]), "regions": len(blocks["regions"][1]), "prices": r["rows"], "outcome": r["outcome"]}))


if __name__ == "__main__":
    main()
