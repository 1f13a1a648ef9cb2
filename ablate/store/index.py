"""The DuckDB index over a pool: locked writes, rebuilds, read-only SQL (tables and views: index_schema.py).

How to run:
    ablate sql "SELECT * FROM proxy_fidelity"
    duckdb pool/index.duckdb -readonly -c "SELECT * FROM mixture_vs_union LIMIT 5"

The index is derived data: member sidecars (`models/*/meta.json`), unit sidecars
and `results/*.jsonl` are the truth and `rebuild()` recreates every table from
them. DuckDB lets one process hold the file for writing, so every write takes an
exclusive file lock, opens, commits one transaction and closes; other writers wait
with backoff, and a reader that meets a writer retries.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ablate.core import faults
from ablate.core.config import config_hash
from ablate.core.errors import AblateError, UsageError
from ablate.store.pool import Pool, read_json, staged_file
from ablate.store.schema import SCHEMA, TABLES, VIEWS


def _schema_current(con) -> bool:
    """True for a new, empty file or one built with this version's tables and views."""
    names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    if not names:
        return True
    if "ablate_meta" not in names:
        return False
    return con.execute("SELECT value FROM ablate_meta WHERE key = 'schema'").fetchone() == (SCHEMA,)


def _has_tables(con) -> bool:
    # re-creating every table and view on each write cost ~50 ms per upsert; only a new file needs it
    return con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'ablate_meta'"
                       ).fetchone()[0] > 0


def _columns(table: str) -> list[str]:
    cols = []
    for part in TABLES[table].split(","):
        part = part.strip()
        if part:
            cols.append(part.split()[0])
    return cols


# rows per INSERT statement: DuckDB's executemany binds and runs one row at a time (about 6 ms a row: 20 rows
# 0.12 s, 200 rows 1.2 s), one statement of many VALUES takes 0.04 s and 0.2 s
ROWS_PER_STATEMENT = 200


def _row_marks(table: str, n_rows: int) -> str:
    marks = "(" + ", ".join("?" for _ in _columns(table)) + ")"
    return ", ".join([marks] * n_rows)


def _upsert_sql(table: str, n_rows: int = 1) -> str:
    """INSERT ... ON CONFLICT of `n_rows` rows: the row with the newer created_at wins."""
    cols = _columns(table)
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
    return (f"INSERT INTO {table} ({', '.join(cols)}) VALUES {_row_marks(table, n_rows)} ON CONFLICT ({cols[0]}) "
            f"DO UPDATE SET {updates} WHERE excluded.created_at >= {table}.created_at")


def _replace_sql(table: str, n_rows: int) -> str:
    return f"INSERT OR REPLACE INTO {table} ({', '.join(_columns(table))}) VALUES {_row_marks(table, n_rows)}"


def _statements(sql_for, batch: list[list]) -> list[tuple[str, list]]:
    """(sql, flat parameters) per ROWS_PER_STATEMENT rows of `batch` (rows of values in column order)."""
    chunks = (batch[i:i + ROWS_PER_STATEMENT] for i in range(0, len(batch), ROWS_PER_STATEMENT))
    return [(sql_for(len(chunk)), [v for row in chunk for v in row]) for chunk in chunks]


def _upsert_statements(table: str, rows: list[dict]) -> list[tuple[str, list]]:
    """Statements that leave the table as upserting `rows` one by one would: one statement may not touch a key
    twice, so a key repeated in `rows` keeps the row that would have won (a later row wins when its created_at is
    at least the kept one's; a missing created_at never wins, as NULL >= x is not true)."""
    cols = _columns(table)
    at = cols.index("created_at")
    kept: dict = {}
    for r in rows:
        values = [_sql_value(r.get(c)) for c in cols]
        old = kept.get(values[0])
        if old is None or (values[at] is not None and old[at] is not None and values[at] >= old[at]):
            kept[values[0]] = values
    return _statements(lambda n: _upsert_sql(table, n), list(kept.values()))


def _replace_statements(table: str, rows: list[dict]) -> list[tuple[str, list]]:
    """Statements of INSERT OR REPLACE: a key repeated in `rows` keeps its last row, as replacing them one by one
    would (one statement may not touch a key twice)."""
    cols = _columns(table)
    last = {}
    for r in rows:
        values = [_sql_value(r.get(c)) for c in cols]
        last[values[0]] = values
    return _statements(lambda n: _replace_sql(table, n), list(last.values()))


def _holder(lock_path: Path) -> str:
    try:
        return lock_path.read_text().strip() or "unknown process"
    except OSError:
        return "unknown process"


class Index:
    def __init__(self, pool: Pool, timeout_s: float = 120.0):
        self.pool = pool
        self.timeout_s = timeout_s
        self.lock_path = pool.root / ".index.lock"

    @contextmanager
    def _write_lock(self):
        self.pool.ensure_writable()
        fh = open(self.lock_path, "a+")
        deadline = time.monotonic() + self.timeout_s
        delay = 0.01
        try:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise AblateError(
                            f"index {self.pool.index_path} is busy for {self.timeout_s:.0f}s "
                            f"(held by {_holder(self.lock_path)}); try again") from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Open the file, retrying while another process holds DuckDB's own lock."""
        deadline = time.monotonic() + self.timeout_s
        delay = 0.02
        while True:
            try:
                return duckdb.connect(str(self.pool.index_path), read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise AblateError(f"cannot open index {self.pool.index_path}: {str(exc).splitlines()[0]}") from None
            except duckdb.Error as exc:
                raise AblateError(
                    f"index {self.pool.index_path} is unreadable ({str(exc).splitlines()[0]}); "
                    f"run `ablate pool reindex`") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    @staticmethod
    def _create(con) -> None:
        for name, cols in TABLES.items():
            con.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols})")
        for name, body in VIEWS.items():
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {body}")
        con.execute("CREATE TABLE IF NOT EXISTS ablate_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute("INSERT OR REPLACE INTO ablate_meta VALUES ('schema', ?)", [SCHEMA])

    def upsert(self, table: str, rows: list[dict], also: dict[str, list[dict]] | None = None) -> None:
        """Insert rows in one transaction under the write lock; on a key clash the newer row wins.
        `also`: other tables' rows committed in the same transaction (a row's per-window losses).

        "Newer" is by `created_at`, not by commit order, so the index always
        agrees with `rebuild()` even when concurrent writers commit out of order.
        """
        batches = [(t, r) for t, r in [(table, rows), *(also or {}).items()] if r]
        if not batches:
            return
        statements = [s for t, rs in batches for s in _upsert_statements(t, rs)]
        with self._write_lock():
            con = self._connect(read_only=False)
            if not _schema_current(con):  # an index from an older ablate: rebuild, then write
                con.close()
                self._rebuild_locked()
                con = self._connect(read_only=False)
            try:
                if not _has_tables(con):  # a new file; an existing one is current (checked above)
                    self._create(con)
                con.execute("BEGIN")
                for sql, values in statements:
                    con.execute(sql, values)
                faults.point("index.txn")
                con.execute("COMMIT")
            finally:
                con.close()

    def query(self, sql: str, params: list | None = None, sandboxed: bool = False) -> tuple[list[str], list[tuple]]:
        """Run a read-only query. A missing index is built from the files first.

        `sandboxed` (user SQL) also turns off DuckDB's access to other files and
        extensions, so a SELECT cannot read or write outside the index.
        """
        if not self.pool.index_path.exists():
            if not self.pool.root.exists():
                raise UsageError(f"no pool at {self.pool.root}")
            self.rebuild()
        con = self._connect(read_only=True)
        if not _schema_current(con):
            con.close()
            self.rebuild()
            con = self._connect(read_only=True)
        if sandboxed:
            con.execute("SET enable_external_access = false")
            con.execute("SET autoinstall_known_extensions = false")
            con.execute("SET autoload_known_extensions = false")
            con.execute("SET lock_configuration = true")
        try:
            cur = con.execute(sql, params or [])
            cols = [d[0] for d in cur.description] if cur.description else []
            return cols, cur.fetchall()
        except duckdb.Error as exc:
            raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from None
        finally:
            con.close()

    def rows(self, sql: str, params: list | None = None) -> list[dict]:
        """query's rows as dicts (column -> value): what the report, the plots and the proxies read."""
        cols, rows = self.query(sql, params)
        return [dict(zip(cols, r)) for r in rows]

    def rebuild(self) -> dict[str, int]:
        """Recreate index.duckdb from the sidecars and result files; return row counts."""
        self.pool.clean_leftovers()
        with self._write_lock():
            return self._rebuild_locked()

    def _rebuild_locked(self) -> dict[str, int]:
        """rebuild() for a caller that already holds the write lock: a temp file, then one rename."""
        tables = {
            "units": [read_json(p, "unit sidecar") for d in (self.pool.units_dir, self.pool.eval_dir)
                      if d.is_dir() for p in sorted(d.glob("*.json"))],
            "models": [model_row(m) for m in self.pool.iter_metas()],
            "mixture_perplexity": list(iter_result_rows(self.pool.results_dir)),
            "searches": list(iter_result_rows(self.pool.root / "searches")),
            "screened_perplexity": list(iter_result_rows(self.pool.root / "screened")),
            "optimizations": list(iter_result_rows(self.pool.root / "optimizations")),
        }
        tables["window_losses"] = window_loss_rows(tables["mixture_perplexity"])
        tables["task_examples"] = task_example_rows(tables["mixture_perplexity"])  # the same newest-wins rows
        with staged_file(self.pool.index_path, self.pool.index_path.with_name(f".index-{os.getpid()}.duckdb")) as tmp:
            con = duckdb.connect(str(tmp))
            try:
                self._create(con)
                for table, rows in tables.items():
                    for sql, values in _replace_statements(table, rows):
                        con.execute(sql, values)
                con.execute("CHECKPOINT")
            finally:
                con.close()
            faults.point("reindex.swap")
        Path(str(self.pool.index_path) + ".wal").unlink(missing_ok=True)
        return {table: len(rows) for table, rows in tables.items()}


def check_read_only(sql: str) -> None:
    """User SQL: exactly one SELECT (or EXPLAIN); writes, ATTACH, LOAD/INSTALL, COPY, SET refused."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise UsageError(f"give exactly one SQL statement (got {len(statements)})")
    kind = statements[0].type
    if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
        raise UsageError(f"only read-only SELECT queries are allowed, not {kind.name}")


def _sql_value(v):
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, default=str)
    return v


def recipe_id(recipe: dict, replicate: int = 0) -> str:
    """The training recipe a member was trained with, replicates folded in (a replicate only moves the
    data seed by 1000 each): the key cost views group by, so members of other recipes (another
    `train.epochs` or lr) are never priced with the study's own."""
    base = dict(recipe, data_seed=recipe["data_seed"] - 1000 * replicate) if "data_seed" in recipe else recipe
    return config_hash(base)


def model_row(meta: dict) -> dict:
    row = dict(meta)
    row["path"] = f"models/{meta['model_id']}"
    if meta.get("kind") in ("unit", "union") and meta.get("recipe"):
        row["recipe_id"] = recipe_id(meta["recipe"], int(meta.get("replicate") or 0))
    if meta.get("kind") in ("unit", "union") and "budget" not in meta:  # trained before budgets existed
        k = len(meta.get("units") or [1])
        row.update(budget="sum", budget_tokens=meta.get("train_tokens"), weights=[1.0 / k] * k)
    return row


def window_loss_rows(rows: list[dict]) -> list[dict]:
    """The `window_losses` rows of measured rows that kept their per-window losses (a row's `window_nll` rides in
    its results line; one window_losses row per such row, same id and created_at, so both tables agree)."""
    return [{"row_id": r["row_id"], "method": r["method"], "model_id": r["model_id"], "eval_set": r["eval_set"],
             "eval_sha256": r["eval_sha256"], "n_windows": len(r["window_nll"]), "window_nll": r["window_nll"],
             "created_at": r["created_at"]} for r in rows if r.get("window_nll")]


def task_example_rows(rows: list[dict]) -> list[dict]:
    """The `task_examples` rows of rows measured on a task with choices (ablate/scoring/tasks.py): every
    choice's NLL and each example's correct / not, riding in the results line as window_nll does."""
    return [{"row_id": r["row_id"], "method": r["method"], "model_id": r["model_id"], "eval_set": r["eval_set"],
             "eval_sha256": r["eval_sha256"], "n_examples": len(r["correct"]), "correct": r["correct"],
             "choice_nll": r.get("choice_nll"), "accuracy": sum(r["correct"]) / len(r["correct"]),
             "created_at": r["created_at"]} for r in rows if r.get("correct")]


def iter_result_rows(folder: Path):
    """Rows from folder/*.jsonl (results, searches); of rows sharing a row_id the newest wins."""
    rows: dict[str, dict] = {}
    if folder.is_dir():
        for path in sorted(folder.glob("*.jsonl")):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise AblateError(f"corrupted results file {path} line {n}") from None
                prev = rows.get(row["row_id"])
                # the same rule as upsert(): the newest measurement of a row wins
                if prev is None or str(row["created_at"]) >= str(prev["created_at"]):
                    rows[row["row_id"]] = row
    yield from sorted(rows.values(), key=lambda r: r["row_id"])
