"""Mixture search: rank candidate mixtures by the proxy, then check the top ones by retraining.

How to run:
    ablate search --target quotes --max-size 3                       # uniform mixtures
    ablate search --target quotes --weights-grid 1,2 --method calibrated
    ablate search --target quotes --validate 2                       # train the top 2 as unions

Candidates are every uniform mixture of up to `--max-size` units, plus weighted
variants of the small ones (each unit's weight drawn from `--weights-grid`,
normalized, duplicates removed). Each candidate is merged and evaluated on the
target only (cached rows are reused). `--method calibrated` ranks by the
calibrated proxy (see calibrate.py). `--validate M` trains the top M uniform
candidates as unions (weighted unions are not trained: the baseline recipe has
no per-unit data weights) and reports where the proxy's choice landed among all
unions known for the target. Rankings go to the `searches` table.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
import uuid
from datetime import datetime, timezone

from ablate.config import StudyConfig
from ablate.errors import UsageError
from ablate.index import Index
from ablate.pool import Pool, atomic_write_bytes


def candidates(units: list[str], max_size: int, grid: list[float], weighted_max_size: int = 3):
    """(units, weights) pairs: uniform subsets, then weighted variants of subsets up to weighted_max_size."""
    out, seen = [], set()
    for k in range(1, max_size + 1):
        for combo in itertools.combinations(sorted(units), k):
            out.append((list(combo), [1.0 / k] * k))
            seen.add((combo, tuple([round(1.0 / k, 9)] * k)))
    for k in range(2, min(max_size, weighted_max_size) + 1):
        for combo in itertools.combinations(sorted(units), k):
            for raw in itertools.product(grid, repeat=k):
                if sum(raw) <= 0:
                    continue
                w = tuple(round(x / sum(raw), 9) for x in raw)
                if 0.0 in w or (combo, w) in seen:
                    continue  # a zero weight is a smaller mixture, already a candidate
                seen.add((combo, w))
                out.append((list(combo), list(w)))
    return out


def _score(cfg: StudyConfig, pool: Pool, target: str, cands) -> dict[tuple, float]:
    """Merged perplexity on the target for every candidate (cached rows first, then merge+eval)."""
    from ablate.energy import Meter
    from ablate.merge import merge_id, merge_members
    from ablate.model import load_state, model_from_config, seed_config
    from ablate.progress import bar
    from ablate.score import attach_cost, evaluate_rows, existing_rows, load_study, write_rows

    study = load_study(cfg, pool, [target])
    members = {u: study.unit_member(u) for u in {u for c, _ in cands for u in c}}
    ids = {(tuple(c), tuple(w)): merge_id([members[u] for u in c], w) for c, w in cands}
    done = existing_rows(pool)
    _, rows = Index(pool).query("SELECT model_id, ppl FROM mixture_perplexity WHERE method = 'merged' "
                                "AND eval_set = ?", [target])
    known = dict(rows)
    model = model_from_config(seed_config(pool, study.seed["model_id"]))
    new_rows = []
    todo = [(c, w) for c, w in cands if ids[(tuple(c), tuple(w))] not in known]
    with Meter(cfg.energy) as meter, bar(f"search {target}", len(todo)) as update:
        for c, w in todo:
            t0 = time.perf_counter()
            load_state(model, merge_members(pool, [members[u] for u in c], w), "merged weights")
            mid = ids[(tuple(c), tuple(w))]
            rows = evaluate_rows(study, model, method="merged", mixture=c, weights=w, model_id=mid,
                                 merge_s=time.perf_counter() - t0, skip=done)
            new_rows += rows
            known[mid] = rows[0]["ppl"] if rows else known.get(mid)
            update(1)
    attach_cost(new_rows, meter.result)
    write_rows(pool, new_rows)
    return {key: known[mid] for key, mid in ids.items()}


def _calibrated(pool: Pool, target: str) -> dict[tuple, float]:
    _, rows = Index(pool).query("SELECT mixture, weights, ppl FROM mixture_perplexity "
                                "WHERE method = 'calibrated' AND eval_set = ?", [target])
    return {(tuple(m), tuple(round(x, 9) for x in w)): p for m, w, p in rows}


def run_search(cfg: StudyConfig, pool: Pool, target: str, *, max_size: int = 3, grid: list[float] | None = None,
               method: str = "merged", validate: int = 0, top: int = 10, log=print) -> dict:
    from ablate.calibrate import refresh
    from ablate.score import load_study, score_reference_models, existing_rows, write_rows
    from ablate.train import train_member

    if method not in ("merged", "calibrated"):
        raise UsageError(f"--method must be merged or calibrated, not {method!r}")
    if max_size < 1 or validate < 0 or top < 1:
        raise UsageError("--max-size and --top must be ≥ 1, --validate ≥ 0")
    units = sorted(p.stem for p in pool.units_dir.glob("*.json") if not p.stem.startswith("seedmix-"))
    if not units:
        raise UsageError(f"no units in {pool.root}: run `ablate units split` first")
    cands = candidates(units, min(max_size, len(units)), grid or [1.0])
    scores = _score(cfg, pool, target, cands)
    if method == "calibrated":
        if refresh(pool, cfg.eval.seq_len, log=log) is None:
            raise UsageError("--method calibrated needs a calibration: train a few unions first "
                             "(`ablate suggest-unions`)")
        cal = _calibrated(pool, target)
        scores = {(c, tuple(round(x, 9) for x in w)): cal[(c, tuple(round(x, 9) for x in w))] for c, w in scores}
    ranked = sorted(scores.items(), key=lambda kv: kv[1])
    validated = []
    if validate:
        picks = [list(c) for (c, w), _ in ranked if len(c) > 1 and len(set(w)) == 1][:validate]
        for mix in picks:
            train_member(cfg, pool, mix, log=log)
            validated.append(tuple(mix))
        study = load_study(cfg, pool, [target])
        write_rows(pool, score_reference_models(study, [list(v) for v in validated], existing_rows(pool)))
    _, rows = Index(pool).query("SELECT mixture, ppl FROM mixture_perplexity WHERE method = 'union' "
                                "AND coalesce(replicate, 0) = 0 AND eval_set = ?", [target])
    union_ppl = {tuple(m): p for m, p in rows}
    union_rank = {m: i + 1 for i, (m, _) in enumerate(sorted(union_ppl.items(), key=lambda kv: kv[1]))}
    search_id = f"search-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    out_rows = []
    for rank, ((c, w), score) in enumerate(ranked[:max(top, validate)], 1):
        uniform = len(set(w)) == 1
        out_rows.append({
            "row_id": f"{search_id}:{rank}", "search_id": search_id, "target": target, "method": method,
            "rank": rank, "mixture": list(c), "weights": list(w), "proxy_ppl": score,
            "union_ppl": union_ppl.get(c) if uniform else None,
            "union_rank": union_rank.get(c) if uniform else None, "n_unions_known": len(union_ppl),
            "validated": uniform and c in validated, "created_at": now})
    blob = "".join(json.dumps(r) + "\n" for r in out_rows).encode()
    atomic_write_bytes(pool.root / "searches" / f"{search_id}-{os.getpid()}.jsonl", blob)
    Index(pool).upsert("searches", out_rows)
    best_true = min(union_ppl.values()) if union_ppl else math.nan
    return {"search_id": search_id, "rows": out_rows, "candidates": len(cands), "best_union_ppl": best_true}
