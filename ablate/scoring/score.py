"""Scoring mixtures: merge members in memory, evaluate, write `mixture_perplexity` rows.

How to run:
    ablate score-mixture fiction-00 bible-00               # merged + union (if trained) + seed
    ablate score-mixture fiction-00 bible-00 --weights 3,1 --eval quotes

A mixture's merged model is the average of its units' members (inplace.merged_model). Rows are
keyed by (method, model, eval set), so asking again reads the table instead of
evaluating (`--force` re-evaluates). Their layout, ids and files are ablate/store/results.py's; the
study context (seed, eval sets, which member a unit is) is ablate/study/context.py's. Refreshing the
fitted proxies' rows after scoring (calibrate.refresh) is the command's step (ablate/workflows/steps.py): the
verdict sits above scoring.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import ablate.scoring.proxies as proxies
from ablate.core.config import StudyConfig
from ablate.core.energy import Meter
from ablate.core.progress import bar
from ablate.core.weights import wkey
from ablate.models.device import eval_precision
from ablate.models.model import count_params, load_member
from ablate.scoring.inplace import merged_model
from ablate.scoring.merge import merge_id, parse_mixture
from ablate.scoring.tasks import attach_accuracy, choice_tasks, evaluate_eval_set, predicted_per_window
from ablate.scoring.uncertainty import describe_gap, gaps_to_best
from ablate.store.index import Index
from ablate.store.pool import Pool
from ablate.store.results import (
    Row,
    attach_cost,
    existing_rows,
    make_row,
    row_id,
    rows_without_examples,
    window_losses,
    write_rows,
)
from ablate.study.budgets import BUDGETS
from ablate.study.context import Study, load_study


def evaluate_rows(study: Study, model, *, method: str, mixture: list[str], weights: list[float], model_id: str,
                  merge_s: float = 0.0, skip: set[str] = frozenset(), replicate: int = 0,
                  spec: str | None = None, budget: str | None = None) -> list[Row]:
    """One row per eval set (those not in `skip`), with the raw sums and FLOPs.

    `budget` names the ground truth a union row is (sum | unit | tokens=N); None for proxies."""
    cfg = study.cfg
    _, n_nonembed = count_params(model)
    device = next(model.parameters()).device
    rows = []
    for ev in study.evals:
        if row_id(method, model_id, ev, cfg.eval.seq_len) in skip:
            continue
        stats = evaluate_eval_set(model, study, ev)
        rows.append(study_row(study, ev, stats, method=method, mixture=mixture, weights=weights, model_id=model_id,
                              n_nonembed=n_nonembed, device=device, merge_s=merge_s if not rows else 0.0,
                              replicate=replicate, spec=spec, budget=budget))
    return rows


def study_row(study: Study, ev: dict, stats: dict, *, method: str, mixture: list[str], weights: list[float],
              model_id: str, n_nonembed: int, device, merge_s: float = 0.0, replicate: int = 0,
              spec: str | None = None, budget: str | None = None) -> Row:
    """results.make_row for a model of this study evaluated on `ev` (evaluate_tokens' or batched.window_stats'
    sums): the row id, seed, device, precision and FLOPs filled in from the study."""
    return make_row(row_id(method, model_id, ev, study.cfg.eval.seq_len), method=method, mixture=mixture,
                    weights=weights, ev=ev, stats=stats, model_id=model_id, seed_id=study.seed["model_id"],
                    device=str(device), eval_precision=eval_precision(device, study.precision),
                    flops=2.0 * n_nonembed * stats["n_tokens"], merge_s=merge_s, replicate=replicate, spec=spec,
                    budget=budget)


def score_reference_models(study: Study, mixtures: list[list[str]], done: set[str],
                           budget: str | None = None) -> list[Row]:
    """Rows for what exists to compare against: the seed and every trained union of the mixtures
    (each ground truth: budget, weights, and every replicate, whose spread is the noise floor);
    with `budget`, only the unions of that ground truth."""
    todo = [("seed", [], study.seed["model_id"], 0, [], None)]
    for mix in mixtures:
        if len(mix) > 1:
            todo += [("union", mix, m["model_id"], m.get("replicate", 0), m.get("weights") or [1.0 / len(mix)] * len(mix),
                      m.get("budget", "sum")) for m in study.truths(mix) if budget in (None, m.get("budget", "sum"))]
    rows = []
    with Meter(study.cfg.energy) as meter:
        for method, mix, mid, rep, weights, budget in todo:
            if all(row_id(method, mid, ev, study.cfg.eval.seq_len) in done for ev in study.evals):
                continue
            model = load_member(study.pool, mid, full_hash=study.cfg.verify_hash, device=study.device)
            rows += evaluate_rows(study, model, method=method, mixture=mix, weights=weights, model_id=mid,
                                  skip=done, replicate=rep, budget=budget)
    attach_cost(rows, meter.result)
    return rows


def score_built_models(study: Study, mixtures: list[tuple[list[str], list[float]]], method: str, build,
                       label: str | None = None, force: bool = False) -> dict[tuple, str]:
    """Rows for an evaluated proxy (merged, task-sum): `build(pool, seed_id, members, weights)` gives each
    (mixture, weights)'s state dict; evaluated on the study's eval sets unless cached (or `force`), priced,
    written. Returns {(mixture, weights): model id}."""
    cfg, pool = study.cfg, study.pool
    done = set() if force else existing_rows(pool, study.precision)
    ids, todo = {}, []
    for mix, weights in mixtures:
        members = [study.unit_member(u) for u in mix]
        mid = ids[(tuple(mix), tuple(weights))] = proxies.model_id(method, members, weights)
        if not all(row_id(method, mid, ev, cfg.eval.seq_len) in done for ev in study.evals):
            todo.append((mix, weights, members, mid))
    if build == proxies.get("merged").build:
        build = None  # the average streams straight into the parameters: no state dict beside the model
    rows, model = [], None
    n_reused = max(0, len(ids) - len(todo))
    reused = f"{n_reused} mixture{'s' * (n_reused != 1)}' rows reused from the pool"
    with Meter(cfg.energy) as meter, bar(label or method, len(todo), reused=reused) as update:
        for mix, weights, members, mid in todo:
            t0 = time.perf_counter()
            model = merged_model(pool, study.seed["model_id"], members, weights, full_hash=cfg.verify_hash,
                                 device=study.device, build=build, model=model)
            rows += evaluate_rows(study, model, method=method, mixture=mix, weights=weights, model_id=mid,
                                  merge_s=time.perf_counter() - t0, skip=done)
            update(1)
    attach_cost(rows, meter.result)
    write_rows(pool, rows)
    return ids


def score_mixture(cfg: StudyConfig, pool: Pool, items: list[str], weights: str | list[float] | None = None,
                  eval_names: list[str] | None = None, force: bool = False) -> Scored:
    """Merged rows for one mixture plus union/seed rows for comparison, written; `shown_rows` reads them back.

    `items` are units or macro groups `a+b`; `weights` (one per item) follow the items' order.
    """
    unit_ids, weights, spec = parse_mixture(items, weights)
    study = load_study(cfg, pool, eval_names)
    members = [study.unit_member(u) for u in unit_ids]
    mid = merge_id(members, weights)
    # a stored row without accuracy (a sweep's, on a task with choices) is measured again, every choice this time
    done = set() if force else existing_rows(pool, study.precision) - rows_without_examples(pool, choice_tasks(study))
    rows = []
    if not all(row_id("merged", mid, ev, cfg.eval.seq_len) in done for ev in study.evals):
        with Meter(cfg.energy) as meter:
            t0 = time.perf_counter()
            model = merged_model(pool, study.seed["model_id"], members, weights, full_hash=cfg.verify_hash,
                                 device=study.device)
            merge_s = time.perf_counter() - t0
            rows = evaluate_rows(study, model, method="merged", mixture=unit_ids, weights=weights,
                                 model_id=mid, merge_s=merge_s, skip=done, spec=spec)
        attach_cost(rows, meter.result)
    rows += score_reference_models(study, [unit_ids], done)
    write_rows(pool, rows)
    return Scored(study, unit_ids, weights, mid)


class Scored(NamedTuple):
    """One scored mixture: enough to read its rows back (`shown_rows`)."""
    study: Study
    unit_ids: list[str]
    weights: list[float]
    model_id: str


def shown_rows(scored: Scored) -> list[dict]:
    """What score-mixture prints: the merged row, the fitted proxies' rows for each ground truth
    (calibrate.refresh writes them), the seed, and the first replicate of each union with these weights."""
    study, unit_ids, weights, mid = scored
    seq_len = study.cfg.eval.seq_len
    methods = ["merged"] + [f"{m}:{b}" for m in ("calibrated", "regression") for b in BUDGETS]
    ids = [row_id(m, mid, ev, seq_len) for ev in study.evals for m in methods]
    ids += [row_id("seed", study.seed["model_id"], ev, seq_len) for ev in study.evals]
    for truth in study.truths(unit_ids) if len(unit_ids) > 1 else []:
        uniform = [1.0 / len(unit_ids)] * len(unit_ids)  # a union trained before weights existed
        if truth.get("replicate", 0) == 0 and wkey(truth.get("weights", uniform)) == wkey(weights):
            ids += [row_id("union", truth["model_id"], ev, seq_len) for ev in study.evals]
    marks = ", ".join("?" for _ in ids)
    cols, table = Index(study.pool).query(
        f"SELECT row_id, method, coalesce(budget, '') AS budget, eval_set, ppl, bits_per_byte, n_tokens, eval_s "
        f"FROM mixture_perplexity WHERE row_id IN ({marks}) ORDER BY eval_set, method, budget", ids)
    rows = [dict(zip(cols, r)) for r in table]
    # how sure "merged beats the seed" or "the union beats the merge" is: each measured row against the eval
    # set's best, paired over its windows (fitted rows and rows measured before windows were kept: blank)
    n_pred = {ev["domain"]: predicted_per_window(ev, seq_len) for ev in study.evals}
    gaps_to_best(rows, window_losses(study.pool, [r["row_id"] for r in rows]), n_pred,
                 resamples=study.cfg.eval.bootstrap, seed=study.cfg.eval.bootstrap_seed)
    for r in rows:
        r["vs_best"] = describe_gap(r.get("vs_best"), r.get("vs_best_low"), r.get("vs_best_high"))
    if study.tasks:  # a task's accuracy over its choices, with its interval over examples
        attach_accuracy(study.pool, rows, study.cfg.eval.bootstrap, study.cfg.eval.bootstrap_seed)
    return rows
