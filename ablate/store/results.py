"""Result rows on disk: `mixture_perplexity` (columns, ids, clock, files, cost shares), `searches`, `optimizations`.

How to run (from Python; score-mixture, sweep, search, fidelity and calibrate all write through here):
    from ablate.store.results import existing_rows, make_row, row_id, write_rows, write_search_rows
    done = existing_rows(pool, "fp32")      # ids of the rows already measured in fp32
    write_rows(pool, rows)                  # results/*.jsonl first (the truth), then the index
    write_search_rows(pool, search_id, rows)  # a search's ranking: searches/*.jsonl, then the index

This module alone knows the row layout (mergekit's io/ loaders): `Row` lists every column,
`make_row` is the one builder, `row_id` the one key. A row is one model (a proxy's, a union,
the seed) on one eval set; its id hashes (method, model, eval set, eval data, window), so
measuring again gives the same id, and of two rows with one id the newer `created_at` wins,
in the index (upsert) as on rebuild (index.iter_result_rows). That is why every `created_at`
in ablate (rows, units, models) comes from `now()` here: one clock, ISO 8601 UTC to the
microsecond, so two writes in the same second still order.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from datetime import datetime, timezone
from typing import TypedDict

import numpy as np

from ablate.core import faults
from ablate.core.weights import is_uniform
from ablate.store.index import Index, task_example_rows, window_loss_rows
from ablate.store.pool import Pool, atomic_write_bytes


class Row(TypedDict):
    """One `mixture_perplexity` row (index.TABLES holds the same columns as SQL types)."""

    row_id: str
    mixture: list[str]  # sorted unit ids; [] for the seed
    weights: list[float]  # one per unit, in `mixture` order, normalized
    k: int
    uniform: bool  # weights.is_uniform
    method: str  # merged | union | seed | an evaluated or fitted proxy's name
    eval_set: str
    eval_sha256: str
    n_tokens: int
    n_bytes: int
    nll_sum: float
    ppl: float
    bits_per_byte: float
    eval_s: float
    merge_s: float  # on the first row of a merge only: the merge is paid once
    energy_kwh: float | None  # None until attach_cost prices the block
    co2_kg: float | None
    energy_method: str | None
    flops: float
    model_id: str
    seed_id: str
    device: str
    replicate: int
    spec: str  # the mixture as asked for (macro groups, weights)
    budget: str | None  # the ground truth a union row is, or a fitted proxy predicts; None otherwise
    eval_precision: str | None  # fp32 | bf16; None: a fitted proxy's (no model run) or a row from before
    created_at: str  # now(): the newest row of an id wins
    # each eval window's NLL sum, in window order (rows from before it was kept, and fitted rows: absent): kept
    # in the results file and the `window_losses` table, not in mixture_perplexity, for the rankings' bootstrap
    window_nll: list[float]  # may be absent (see above)
    # a task's (ablate/scoring/tasks.py): every choice's NLL sum and each example's correct / not, kept in the results
    # file and the `task_examples` table; absent for text and for rows that did not run every choice (sweep's)
    choice_nll: list[float]
    correct: list[bool]


def now() -> str:
    """The one clock for every `created_at`: ISO 8601 UTC, microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def row_id(method: str, model_id: str, ev: dict, seq_len: int) -> str:
    key = f"{method}|{model_id}|{ev['domain']}|{ev['data_sha256']}|{seq_len}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def make_row(rid: str, *, method: str, mixture: list[str], weights: list[float], ev: dict, stats: dict,
             model_id: str, seed_id: str, device: str, eval_precision: str | None, flops: float,
             merge_s: float = 0.0, replicate: int = 0, spec: str | None = None, budget: str | None = None,
             energy: dict | None = None) -> Row:
    """Every row's one builder. `ev` is the eval set's sidecar (domain, data_sha256); `stats` are
    evaluate.evaluate_tokens' sums (n_tokens, n_bytes, nll_sum, ppl, bits_per_byte, eval_s);
    `energy` (energy_kwh, co2_kg, energy_method) is set here only for rows no meter prices."""
    energy = energy or {}
    row = Row(row_id=rid, mixture=sorted(mixture), weights=weights, k=len(mixture), uniform=is_uniform(weights),
               method=method, eval_set=ev["domain"], eval_sha256=ev["data_sha256"],
               n_tokens=stats["n_tokens"], n_bytes=stats["n_bytes"], nll_sum=stats["nll_sum"], ppl=stats["ppl"],
               bits_per_byte=stats["bits_per_byte"], eval_s=stats["eval_s"], merge_s=merge_s,
               energy_kwh=energy.get("energy_kwh"), co2_kg=energy.get("co2_kg"),
               energy_method=energy.get("energy_method"), flops=flops, model_id=model_id, seed_id=seed_id,
               device=device, replicate=replicate, spec=spec or "+".join(sorted(mixture)), budget=budget,
               eval_precision=eval_precision, created_at=now())
    for key in ("window_nll", "choice_nll", "correct"):  # per window; a task's per choice and per example
        if stats.get(key) is not None:
            row[key] = list(stats[key])
    return row


def attach_cost(rows: list[Row], cost: dict) -> None:
    """Share a metered block's energy among its rows in proportion to their seconds."""
    total = sum(r["eval_s"] + (r.get("merge_s") or 0) for r in rows) or 1.0
    for r in rows:
        share = (r["eval_s"] + (r.get("merge_s") or 0)) / total
        r["energy_kwh"] = cost["energy_kwh"] * share
        r["co2_kg"] = cost["co2_kg"] * share
        r["energy_method"] = cost["energy_method"] + " (block shared by eval seconds)"


def write_rows(pool: Pool, rows: list[Row], table: str = "mixture_perplexity") -> None:
    """Append-only results file (the truth), then the index. `screened_perplexity` rows (ablate/scoring/screen.py)
    live in screened/, apart from the full evaluations in results/."""
    if not rows:
        return
    folder = pool.results_dir if table == "mixture_perplexity" else pool.root / "screened"
    name = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
    blob = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    atomic_write_bytes(folder / name, blob)
    faults.point("results.written")
    windows = {"window_losses": window_loss_rows(rows), "task_examples": task_example_rows(rows)} \
        if table == "mixture_perplexity" else None
    Index(pool).upsert(table, rows, also=windows)  # a row and its per-window losses in one transaction


def window_losses(pool: Pool, row_ids: list[str]) -> dict[str, np.ndarray]:
    """{row id: its per-window NLL sums} for the rows that kept them (missing ids: measured before, or fitted)."""
    if not row_ids:
        return {}
    marks = ", ".join("?" for _ in row_ids)
    _, rows = Index(pool).query(f"SELECT row_id, window_nll FROM window_losses WHERE row_id IN ({marks})",
                                list(row_ids))
    return {rid: np.asarray(v, dtype=np.float64) for rid, v in rows}


def task_correct(pool: Pool, row_ids: list[str]) -> dict[str, np.ndarray]:
    """{row id: per example correct / not} for the rows measured on a task with choices (the others: absent)."""
    if not row_ids:
        return {}
    marks = ", ".join("?" for _ in row_ids)
    _, rows = Index(pool).query(f"SELECT row_id, correct FROM task_examples WHERE row_id IN ({marks})", list(row_ids))
    return {rid: np.asarray(v, dtype=bool) for rid, v in rows}


def rows_without_examples(pool: Pool, eval_sets: list[str]) -> set[str]:
    """Ids of the rows on these eval sets (tasks with choices) that kept no per-example record: a sweep's, which
    ran the answers only (bits per byte, no accuracy)."""
    if not eval_sets or (not pool.index_path.exists() and not pool.results_dir.exists()):
        return set()
    marks = ", ".join("?" for _ in eval_sets)
    _, rows = Index(pool).query(f"SELECT row_id FROM mixture_perplexity WHERE eval_set IN ({marks}) AND row_id NOT IN "
                                f"(SELECT row_id FROM task_examples)", list(eval_sets))
    return {r[0] for r in rows}


def write_search_rows(pool: Pool, search_id: str, rows: list[dict]) -> None:
    """A search's ranking (the `searches` table): its own file under searches/ (the truth), then the index."""
    blob = "".join(json.dumps(r) + "\n" for r in rows).encode()
    atomic_write_bytes(pool.root / "searches" / f"{search_id}-{os.getpid()}.jsonl", blob)
    Index(pool).upsert("searches", rows)


def write_optimization_row(pool: Pool, row: dict) -> None:
    """One optimization (the `optimizations` table): its own file under optimizations/ (the truth), then the
    index. Validation writes the row again with the same id and a newer created_at: the newer one wins."""
    blob = (json.dumps(row, sort_keys=True) + "\n").encode()
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}"
    atomic_write_bytes(pool.root / "optimizations" / f"{row['row_id']}-{stamp}-{os.getpid()}.jsonl", blob)
    Index(pool).upsert("optimizations", [row])


def read_optimization_row(pool: Pool, row_id: str) -> dict | None:
    """The newest stored version of one optimization (from its files, the truth), or None."""
    rows = [json.loads(line) for path in sorted((pool.root / "optimizations").glob(f"{row_id}-*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r["row_id"] == row_id]
    return max(rows, key=lambda r: str(r["created_at"])) if rows else None


def existing_rows(pool: Pool, precision: str | None = None) -> set[str]:
    """Ids of the rows already measured; with `precision`, only those evaluated in it (rows from before
    the column, NULL, were fp32): asking for bf16 after fp32, or back, measures again (newest wins)."""
    if not pool.index_path.exists() and not pool.results_dir.exists():
        return set()
    if precision is None:
        _, rows = Index(pool).query("SELECT row_id FROM mixture_perplexity")
    else:
        _, rows = Index(pool).query("SELECT row_id FROM mixture_perplexity WHERE coalesce(eval_precision, 'fp32') = ?",
                                    [precision])
    return {r[0] for r in rows}
