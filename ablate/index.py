"""The DuckDB index over a pool: tables, views, locked writes, read-only SQL.

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
import hashlib
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ablate import faults
from ablate.errors import AblateError, UsageError
from ablate.pool import Pool, read_json

TABLES = {
    "units": """
        unit_id VARCHAR PRIMARY KEY, kind VARCHAR, domain VARCHAR, shard INTEGER,
        n_docs BIGINT, n_tokens BIGINT, n_bytes BIGINT, data_sha256 VARCHAR,
        tokenizer_id VARCHAR, path VARCHAR, source VARCHAR, contaminated_docs BIGINT, created_at TIMESTAMP""",
    "models": """
        model_id VARCHAR PRIMARY KEY, kind VARCHAR, units VARCHAR[], seed_id VARCHAR,
        replicate INTEGER, path VARCHAR, sha256 VARCHAR, n_params BIGINT, n_params_nonembed BIGINT,
        train_tokens BIGINT, steps INTEGER, final_loss DOUBLE, wall_s DOUBLE, cpu_s DOUBLE,
        energy_kwh DOUBLE, co2_kg DOUBLE, energy_method VARCHAR, energy_assumptions JSON,
        flops DOUBLE, flops_convention VARCHAR, device VARCHAR, config JSON, versions JSON,
        budget VARCHAR, budget_tokens BIGINT, weights DOUBLE[], draw JSON, created_at TIMESTAMP""",
    "mixture_perplexity": """
        row_id VARCHAR PRIMARY KEY, mixture VARCHAR[], weights DOUBLE[], k INTEGER,
        uniform BOOLEAN, method VARCHAR, eval_set VARCHAR, eval_sha256 VARCHAR,
        n_tokens BIGINT, n_bytes BIGINT, nll_sum DOUBLE, ppl DOUBLE, bits_per_byte DOUBLE,
        eval_s DOUBLE, merge_s DOUBLE, energy_kwh DOUBLE, co2_kg DOUBLE, energy_method VARCHAR,
        flops DOUBLE, model_id VARCHAR, seed_id VARCHAR, device VARCHAR, replicate INTEGER, spec VARCHAR,
        budget VARCHAR, eval_precision VARCHAR, created_at TIMESTAMP""",
    # `--screen` (ablate/screen.py): candidates dropped on a prefix of an eval set; n_tokens is what the
    # prefix held. Apart from mixture_perplexity, so no view, fit or verdict meets a partial evaluation.
    "screened_perplexity": """
        row_id VARCHAR PRIMARY KEY, mixture VARCHAR[], weights DOUBLE[], k INTEGER,
        uniform BOOLEAN, method VARCHAR, eval_set VARCHAR, eval_sha256 VARCHAR,
        n_tokens BIGINT, n_bytes BIGINT, nll_sum DOUBLE, ppl DOUBLE, bits_per_byte DOUBLE,
        eval_s DOUBLE, merge_s DOUBLE, energy_kwh DOUBLE, co2_kg DOUBLE, energy_method VARCHAR,
        flops DOUBLE, model_id VARCHAR, seed_id VARCHAR, device VARCHAR, replicate INTEGER, spec VARCHAR,
        budget VARCHAR, eval_precision VARCHAR, screened BOOLEAN, screen_id VARCHAR, screen_round INTEGER,
        screen_windows INTEGER, full_windows INTEGER, confidence DOUBLE, leader_gap DOUBLE, created_at TIMESTAMP""",
    "searches": """
        row_id VARCHAR PRIMARY KEY, search_id VARCHAR, target VARCHAR, method VARCHAR, budget VARCHAR, rank INTEGER,
        mixture VARCHAR[], weights DOUBLE[], proxy_ppl DOUBLE, union_ppl DOUBLE, union_rank INTEGER,
        n_unions_known INTEGER, validated BOOLEAN, screened BOOLEAN, created_at TIMESTAMP""",
}

# Which question a ground truth answers, from its budget (train.QUESTIONS says the same in Python).
QUESTION_SQL = """CASE {b} WHEN 'unit' THEN 'equal compute: which composition is best at the budget of one unit?'
    WHEN 'sum' THEN 'add data: what if I add these units and train k x longer?'
    ELSE 'fixed budget (' || {b} || '): which composition is best at that many tokens?' END"""
# Proxy methods fitted on unions: their rows in the table are in-sample for the unions they used.
FITTED_SQL = "('calibrated', 'regression')"
ROUND_W = "list_transform({t}.weights, lambda x: round(x, 6))"

# Below this many mixtures with a truth, a ranking statistic says nothing (with 1 or 2 the proxy's
# pick is the best by chance half the time or more, and correlations are undefined or +-1): NULL.
MIN_MIXTURES = 3

# Views users query. Fidelity compares only multi-unit mixtures: for k=1 the merge *is*
# the unit model, which would inflate every correlation. One row per proxy row and ground
# truth: a union of the same units and weights, any budget (sum = k x one unit's tokens,
# unit = one unit's tokens); a fitted proxy's row only meets the truth it was fitted for.
VIEWS = {
    "mixture_vs_union": f"""
        SELECT m.mixture, m.weights, m.k, m.uniform, m.eval_set, m.method AS proxy,
               m.method IN {FITTED_SQL} AS in_sample, coalesce(u.budget, 'sum') AS budget,
               {QUESTION_SQL.format(b="coalesce(u.budget, 'sum')")} AS question,
               m.ppl AS merged_ppl, u.ppl AS union_ppl,
               m.bits_per_byte AS merged_bpb, u.bits_per_byte AS union_bpb,
               m.ppl / u.ppl - 1 AS merged_excess, s.ppl AS seed_ppl
        FROM mixture_perplexity m
        JOIN mixture_perplexity u ON u.method = 'union' AND u.mixture = m.mixture AND u.eval_set = m.eval_set
             AND coalesce(u.replicate, 0) = 0 AND {ROUND_W.format(t="u")} = {ROUND_W.format(t="m")}
             AND (m.budget IS NULL OR m.budget = coalesce(u.budget, 'sum'))
        LEFT JOIN mixture_perplexity s ON s.method = 'seed' AND s.eval_set = m.eval_set AND s.seed_id = m.seed_id
        WHERE m.method NOT IN ('union', 'seed')""",
    "proxy_fidelity": f"""
        WITH j AS (
            SELECT budget, question, proxy, in_sample, eval_set, mixture, ln(merged_ppl) AS lm, ln(union_ppl) AS lu
            FROM mixture_vs_union WHERE k >= 2 AND uniform),
        r AS (
            SELECT *, rank() OVER (PARTITION BY budget, proxy, eval_set ORDER BY lm) AS rm,
                      rank() OVER (PARTITION BY budget, proxy, eval_set ORDER BY lu) AS ru FROM j),
        g AS (
            SELECT budget, any_value(question) AS question, proxy, bool_or(in_sample) AS in_sample, eval_set,
                   count(*) AS n_mixtures, corr(lm, lu) AS pearson_log_ppl, corr(rm, ru) AS spearman_log_ppl,
                   arg_min(mixture, lm) AS proxy_best, arg_min(mixture, lu) AS true_best,
                   arg_min(lu, lm) AS lu_of_proxy_best, min(lu) AS lu_best
            FROM r GROUP BY budget, proxy, eval_set)
        SELECT budget, question, proxy, in_sample, eval_set, n_mixtures,
               CASE WHEN n_mixtures >= {MIN_MIXTURES} THEN pearson_log_ppl END AS pearson_log_ppl,
               CASE WHEN n_mixtures >= {MIN_MIXTURES} THEN spearman_log_ppl END AS spearman_log_ppl,
               proxy_best, true_best,
               CASE WHEN n_mixtures >= {MIN_MIXTURES} THEN proxy_best = true_best END AS top1_agree,
               CASE WHEN n_mixtures >= {MIN_MIXTURES} THEN exp(lu_of_proxy_best - lu_best) - 1 END AS regret
        FROM g ORDER BY budget DESC, proxy, eval_set""",
    # Show Your Work (Dodge et al. 2019): expected best union ppl after trying n random
    # mixtures, E = Σ v(i)·[(i/N)^n − ((i−1)/N)^n] with v sorted worst→best. Retraining finds
    # the true best of its n; the simulation picks its n's proxy-best, whose *true* ppl counts.
    # Per ground truth (budget), for the raw merged proxy.
    "budget_curve": """
        WITH r AS (
            SELECT budget, any_value(question) OVER (PARTITION BY budget) AS question, eval_set, union_ppl AS v,
                   row_number() OVER (PARTITION BY budget, eval_set ORDER BY union_ppl DESC) AS i_true,
                   row_number() OVER (PARTITION BY budget, eval_set ORDER BY merged_ppl DESC, union_ppl DESC) AS i_proxy,
                   count(*) OVER (PARTITION BY budget, eval_set) AS big_n
            FROM mixture_vs_union WHERE k >= 2 AND uniform AND proxy = 'merged'),
        p AS (
            SELECT r.budget, r.question, r.eval_set, g.n, r.v,
                   pow(r.i_true / r.big_n, g.n) - pow((r.i_true - 1) / r.big_n, g.n) AS p_true,
                   pow(r.i_proxy / r.big_n, g.n) - pow((r.i_proxy - 1) / r.big_n, g.n) AS p_proxy
            FROM r JOIN (SELECT range AS n FROM range(1, 1025)) g ON g.n <= r.big_n),
        cu AS (
            SELECT coalesce(budget, 'sum') AS budget, avg(energy_kwh) AS union_kwh, avg(flops) AS union_flops
            FROM models WHERE kind = 'union' AND coalesce(replicate, 0) = 0 GROUP BY ALL),
        c AS (
            SELECT (SELECT coalesce(sum(energy_kwh), 0) FROM models WHERE kind = 'unit') AS units_kwh,
                   (SELECT coalesce(sum(flops), 0) FROM models WHERE kind = 'unit') AS units_flops,
                   (SELECT sum(energy_kwh) / count(DISTINCT mixture) FROM mixture_perplexity
                        WHERE method = 'merged' AND uniform) AS eval_kwh,
                   (SELECT sum(flops) / count(DISTINCT mixture) FROM mixture_perplexity
                        WHERE method = 'merged' AND uniform) AS eval_flops)
        SELECT p.budget, any_value(p.question) AS question, p.eval_set, p.n,
               sum(p.v * p.p_true) AS retrain_expected_best_ppl,
               sqrt(greatest(sum(p.v * p.v * p.p_true) - pow(sum(p.v * p.p_true), 2), 0)) AS retrain_sd,
               sum(p.v * p.p_proxy) AS proxy_expected_best_ppl,
               sqrt(greatest(sum(p.v * p.v * p.p_proxy) - pow(sum(p.v * p.p_proxy), 2), 0)) AS proxy_sd,
               any_value(p.n * cu.union_kwh) AS retrain_kwh, any_value(c.units_kwh + p.n * c.eval_kwh) AS sim_kwh,
               any_value(p.n * cu.union_flops) AS retrain_flops,
               any_value(c.units_flops + p.n * c.eval_flops) AS sim_flops
        FROM p LEFT JOIN cu ON cu.budget = p.budget, c
        GROUP BY p.budget, p.eval_set, p.n ORDER BY p.budget DESC, p.eval_set, p.n""",
    "ablation_cost": """
        WITH unit_cost AS (
            SELECT model_id, units, kind, wall_s, energy_kwh, co2_kg, flops,
                   coalesce(budget, 'sum') AS budget, coalesce(replicate, 0) AS replicate FROM models),
        mixes AS (SELECT DISTINCT mixture, k FROM mixture_perplexity WHERE method = 'merged' AND uniform),
        sim AS (
            SELECT x.mixture, x.k,
                   (SELECT sum(c.energy_kwh) FROM unit_cost c WHERE c.kind = 'unit'
                        AND len(c.units) = 1 AND list_contains(x.mixture, c.units[1])) AS train_kwh,
                   (SELECT sum(c.wall_s) FROM unit_cost c WHERE c.kind = 'unit'
                        AND len(c.units) = 1 AND list_contains(x.mixture, c.units[1])) AS train_s,
                   (SELECT sum(c.flops) FROM unit_cost c WHERE c.kind = 'unit'
                        AND len(c.units) = 1 AND list_contains(x.mixture, c.units[1])) AS train_flops,
                   (SELECT sum(p.energy_kwh) FROM mixture_perplexity p WHERE p.method = 'merged'
                        AND p.uniform AND p.mixture = x.mixture) AS eval_kwh,
                   (SELECT sum(p.eval_s + coalesce(p.merge_s, 0)) FROM mixture_perplexity p
                        WHERE p.method = 'merged' AND p.uniform AND p.mixture = x.mixture) AS eval_s,
                   (SELECT sum(p.flops) FROM mixture_perplexity p WHERE p.method = 'merged'
                        AND p.uniform AND p.mixture = x.mixture) AS eval_flops
            FROM mixes x),
        ret AS (  -- one retraining per ground truth: k x budget (sum) and one unit's budget (unit)
            SELECT c.units AS mixture,
                   sum(c.energy_kwh) FILTER (WHERE c.budget = 'sum') AS retrain_kwh,
                   sum(c.wall_s) FILTER (WHERE c.budget = 'sum') AS retrain_s,
                   sum(c.flops) FILTER (WHERE c.budget = 'sum') AS retrain_flops,
                   sum(c.energy_kwh) FILTER (WHERE c.budget = 'unit' OR c.kind = 'unit') AS fixed_budget_kwh,
                   sum(c.wall_s) FILTER (WHERE c.budget = 'unit' OR c.kind = 'unit') AS fixed_budget_s
            FROM unit_cost c WHERE c.kind IN ('union', 'unit') AND c.replicate = 0
                 AND (c.budget IN ('sum', 'unit')) GROUP BY c.units)
        SELECT s.mixture, s.k, s.train_kwh AS unit_train_kwh, s.eval_kwh AS merged_eval_kwh,
               s.train_s AS unit_train_s, s.eval_s AS merged_eval_s,
               s.train_flops AS unit_train_flops, s.eval_flops AS merged_eval_flops,
               r.retrain_kwh, r.retrain_s, r.retrain_flops, r.fixed_budget_kwh, r.fixed_budget_s,
               sum(coalesce(s.eval_kwh, 0)) OVER w AS cum_sim_eval_kwh,
               sum(coalesce(r.retrain_kwh, 0)) OVER w AS cum_retrain_kwh,
               sum(coalesce(r.retrain_flops, 0)) OVER w AS cum_retrain_flops,
               sum(coalesce(s.eval_flops, 0)) OVER w AS cum_sim_eval_flops
        FROM sim s LEFT JOIN ret r ON r.mixture = s.mixture
        WINDOW w AS (ORDER BY s.k, array_to_string(s.mixture, ',')
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
        ORDER BY s.k, array_to_string(s.mixture, ',')""",
}


# The index is derived data, so a schema change is handled by rebuilding it from the files.
SCHEMA = hashlib.sha256(repr((TABLES, VIEWS)).encode()).hexdigest()[:12]


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

    def upsert(self, table: str, rows: list[dict]) -> None:
        """Insert rows in one transaction under the write lock; on a key clash the newer row wins.

        "Newer" is by `created_at`, not by commit order, so the index always
        agrees with `rebuild()` even when concurrent writers commit out of order.
        """
        if not rows:
            return
        cols = _columns(table)
        values = [[_sql_value(r.get(c)) for c in cols] for r in rows]
        marks = ", ".join("?" for _ in cols)
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
        sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) ON CONFLICT ({cols[0]}) "
               f"DO UPDATE SET {updates} WHERE excluded.created_at >= {table}.created_at")
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
                con.executemany(sql, values)
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
        }
        tmp = self.pool.index_path.with_name(f".index-{os.getpid()}.duckdb")
        tmp.unlink(missing_ok=True)
        con = duckdb.connect(str(tmp))
        try:
            self._create(con)
            for table, rows in tables.items():
                cols = _columns(table)
                if rows:
                    con.executemany(
                        f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                        [[_sql_value(r.get(c)) for c in cols] for r in rows])
            con.execute("CHECKPOINT")
        finally:
            con.close()
        faults.point("reindex.swap")
        os.replace(tmp, self.pool.index_path)
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


def model_row(meta: dict) -> dict:
    row = dict(meta)
    row["path"] = f"models/{meta['model_id']}"
    if meta.get("kind") in ("unit", "union") and "budget" not in meta:  # trained before budgets existed
        k = len(meta.get("units") or [1])
        row.update(budget="sum", budget_tokens=meta.get("train_tokens"), weights=[1.0 / k] * k)
    return row


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
