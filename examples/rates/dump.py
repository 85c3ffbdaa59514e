"""Reads a PostgreSQL plain-text dump (as `pg_dump` writes it, plain or
gzipped) into tables of text rows, applying what the dump does to its data
after the COPY blocks, so the result is what PostgreSQL holds after running
the whole file.

Understood: COPY ... FROM stdin blocks; INSERT INTO t [(cols)] VALUES
(...)[, (...)]; DELETE FROM t [WHERE col = literal [AND ...]]; UPDATE t
SET col = literal[, ...] [WHERE col = literal [AND ...]]; literals '...'
(with ''), date '...', numbers and NULL. Statements that do not change
rows (SET, CREATE TABLE, ALTER TABLE ... ADD CONSTRAINT, CREATE INDEX,
SELECT pg_catalog.set_config, COMMENT) are skipped. Anything else stops the
load with DumpError naming the statement and its line: a dump this reader
does not fully understand is refused, never loaded half right.
"""
import gzip
import re


class DumpError(Exception):
    pass


SKIPPED = re.compile(
    r"^(SET|CREATE\s+(TABLE|INDEX|UNIQUE\s+INDEX|SEQUENCE|SCHEMA|EXTENSION)|ALTER\s+(TABLE|SEQUENCE|SCHEMA)"
    r"|SELECT\s+pg_catalog\.set_config|COMMENT\s+ON)\b",
    re.IGNORECASE | re.DOTALL,
)
# ALTER TABLE is skipped only when it adds a constraint or sets an owner or
# a default: what changes no row.
ALTER_OK = re.compile(r"\b(ADD\s+CONSTRAINT|OWNER\s+TO|SET\s+DEFAULT|ALTER\s+COLUMN)\b", re.IGNORECASE)
LITERAL = r"(?:NULL|(?:date\s*)?'(?:[^']|'')*'|-?\d+(?:\.\d+)?)"
TOKEN = re.compile(r"\s*(" + LITERAL + r"|[A-Za-z_][A-Za-z0-9_.]*|\(|\)|,|=|;)", re.IGNORECASE)


def _open(path):
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _name(t):
    """A table name without its schema (`tasks.prices` is `prices`)."""
    return t.split(".")[-1].strip('"')


def _value(tok):
    """A literal as the text COPY would hold (None for NULL)."""
    if tok.upper() == "NULL":
        return None
    m = re.match(r"^(?:date\s*)?'((?:[^']|'')*)'$", tok, re.IGNORECASE | re.DOTALL)
    if m:
        return m.group(1).replace("''", "'")
    return tok


class _Tokens:
    def __init__(self, text, line):
        self.toks, self.i, self.line, self.text = [], 0, line, text
        pos = 0
        while pos < len(text):
            m = TOKEN.match(text, pos)
            if not m or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise self.error()
            self.toks.append(m.group(1))
            pos = m.end()

    def error(self):
        first = self.text.strip().splitlines()[0] if self.text.strip() else ""
        return DumpError(f"line {self.line}: a statement this loader does not understand: {first[:120]}")

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, *words):
        t = self.peek()
        if t is None or (words and t.upper() not in words):
            raise self.error()
        self.i += 1
        return t

    def done(self):
        if self.peek() == ";":
            self.i += 1
        if self.peek() is not None:
            raise self.error()


def _assignments(tk, columns, separator):
    """`a = x <separator> b = y ...` as [(column index, value)]."""
    out = []
    while True:
        col = tk.take()
        if col not in columns:
            raise tk.error()
        tk.take("=")
        out.append((columns.index(col), _value(tk.take())))
        if tk.peek() and tk.peek().upper() == separator:
            tk.take(separator)
            continue
        return out


def _conditions(tk, columns):
    """`WHERE a = x AND b = y` as [(column index, value)]; [] without one."""
    if tk.peek() and tk.peek().upper() == "WHERE":
        tk.take("WHERE")
        return _assignments(tk, columns, "AND")
    return []


def _matches(row, conds):
    return all(row[i] is not None and row[i] == v for i, v in conds)


def _apply(text, line, tables):
    """Applies one statement that is not a COPY."""
    head = text.lstrip()
    if SKIPPED.match(head):
        if re.match(r"^ALTER\s+TABLE", head, re.IGNORECASE) and not ALTER_OK.search(head):
            first = head.splitlines()[0]
            raise DumpError(f"line {line}: a statement this loader does not understand: {first[:120]}")
        return
    tk = _Tokens(text, line)
    verb = tk.take("INSERT", "DELETE", "UPDATE")
    if verb.upper() == "INSERT":
        tk.take("INTO")
        table = _name(tk.take())
        if table not in tables:
            raise tk.error()
        columns, rows = tables[table]
        order = list(range(len(columns)))
        if tk.peek() == "(":
            tk.take("(")
            named = []
            while tk.peek() != ")":
                named.append(tk.take())
                if tk.peek() == ",":
                    tk.take(",")
            tk.take(")")
            if any(c not in columns for c in named):
                raise tk.error()
            order = [columns.index(c) for c in named]
        tk.take("VALUES")
        while True:
            tk.take("(")
            vals = []
            while tk.peek() != ")":
                vals.append(_value(tk.take()))
                if tk.peek() == ",":
                    tk.take(",")
            tk.take(")")
            if len(vals) != len(order):
                raise tk.error()
            row = [None] * len(columns)
            for i, v in zip(order, vals):
                row[i] = v
            rows.append(row)
            if tk.peek() == ",":
                tk.take(",")
                continue
            break
        tk.done()
    elif verb.upper() == "DELETE":
        tk.take("FROM")
        table = _name(tk.take())
        if table not in tables:
            raise tk.error()
        columns, rows = tables[table]
        conds = _conditions(tk, columns)
        tk.done()
        rows[:] = [r for r in rows if not _matches(r, conds)]
    else:
        table = _name(tk.take())
        if table not in tables:
            raise tk.error()
        columns, rows = tables[table]
        tk.take("SET")
        sets = _assignments(tk, columns, ",")
        conds = _conditions(tk, columns)
        tk.done()
        for r in rows:
            if _matches(r, conds):
                for i, v in sets:
                    r[i] = v


def read(path):
    """{table: (columns, rows)}: every COPY block, with the dump's later
    INSERT, DELETE and UPDATE statements applied; rows are lists of text
    (None for NULL). Raises DumpError on a statement it does not
    understand."""
    tables, copy, stmt, start = {}, None, [], 0
    with _open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if copy is not None:
                if line == "\\.":
                    copy = None
                else:
                    copy.append([None if v == "\\N" else v for v in line.split("\t")])
                continue
            if not stmt and (line.strip() == "" or line.lstrip().startswith("--")):
                continue
            if not stmt:
                start = n
            stmt.append(line)
            text = "\n".join(stmt)
            # A statement ends with ';' at the end of a line, outside quotes.
            if not line.rstrip().endswith(";") or text.count("'") % 2:
                continue
            stmt = []
            m = re.match(r"^\s*COPY\s+(\S+)\s*\(([^)]*)\)\s+FROM\s+stdin;\s*$", text, re.IGNORECASE)
            if m:
                table = _name(m.group(1))
                columns = [c.strip().strip('"') for c in m.group(2).split(",")]
                copy = []
                tables[table] = (columns, copy)
                continue
            _apply(text, start, tables)
    if stmt:
        raise _Tokens("\n".join(stmt), start).error()
    return tables
