"""Scoring mixtures: merge members in memory, evaluate, write `mixture_perplexity` rows.

How to run:
    ablate score-mixture fiction-00 bible-00               # merged + union (if trained) + seed
    ablate score-mixture fiction-00 bible-00 --weights 3,1 --eval quotes

A mixture's merged model is the average of its units' members. Rows are keyed by
(method, model, eval set), so asking again reads the table instead of
evaluating (`--force` re-evaluates). Rows go to `results/*.jsonl` first (the
truth), then into the index.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch

from ablate import faults, proxies
from ablate.config import StudyConfig
from ablate.device import eval_precision, resolve_device
from ablate.errors import UsageError
from ablate.evaluate import evaluate_tokens
from ablate.index import Index
from ablate.model import count_params, find_seed, load_member, load_state, model_from_config, seed_config
from ablate.pool import Pool, atomic_write_bytes
from ablate.threads import claim as claim_threads
from ablate.train import member_id, member_recipe
from ablate.truths import BUDGETS
from ablate.units import eval_sets, load_eval_tokens, load_tokenizer, study_tokenizer, token_byte_lengths, unit_meta


@dataclass
class Study:
    """What every scoring step needs, loaded once: seed, eval sets, byte table."""

    cfg: StudyConfig
    pool: Pool
    seed: dict
    evals: list[dict]
    eval_tokens: dict[str, np.ndarray] = field(default_factory=dict)
    byte_len: np.ndarray | None = None
    _unions: list[dict] | None = None  # union sidecars, read once
    device: torch.device = torch.device("cpu")  # where models are built and evaluated (cfg.device)
    precision: str = "fp32"  # what evaluation runs in there (ablate/device.py)

    def unit_member(self, unit_id: str, required: bool = True) -> str | None:
        mid = member_id(self.seed["model_id"], [unit_meta(self.pool, unit_id)], member_recipe(self.cfg), 0)
        if not self.pool.has_member(mid):
            if required:
                raise UsageError(f"unit {unit_id} has no trained member for this seed and recipe: "
                                 f"run `ablate train-partition {unit_id}`")
            return None
        return mid

    def truths(self, unit_ids: list[str]) -> list[dict]:
        """Sidecars of every trained union of exactly these units: any budget, weights, replicate."""
        if self._unions is None:
            self._unions = [m for m in self.pool.iter_metas("union") if m["seed_id"] == self.seed["model_id"]]
        key = sorted(unit_ids)
        return [m for m in self._unions if m["units"] == key]


def load_study(cfg: StudyConfig, pool: Pool, eval_names: list[str] | None = None, device=None) -> Study:
    """`device` overrides cfg.device (a sweep worker's own GPU)."""
    device = resolve_device(cfg) if device is None else torch.device(device)  # first: a bad device is exit 2
    claim_threads(cfg.train.threads)  # evaluation's share of the cores (ablate/threads.py)
    seed = find_seed(pool)
    evals = eval_sets(pool, eval_names)
    tok_dir, _ = study_tokenizer(pool)
    study = Study(cfg, pool, seed, evals, device=device, precision=eval_precision(device, cfg.eval.precision))
    study.byte_len = token_byte_lengths(load_tokenizer(tok_dir))
    for ev in evals:
        tokens = load_eval_tokens(pool, ev)
        if tokens.size < cfg.eval.seq_len:
            raise UsageError(f"eval set {ev['domain']} has {tokens.size} tokens, shorter than one window "
                             f"(eval.seq_len={cfg.eval.seq_len})")
        study.eval_tokens[ev["domain"]] = tokens
    return study


def row_id(method: str, model_id: str, ev: dict, seq_len: int) -> str:
    key = f"{method}|{model_id}|{ev['domain']}|{ev['data_sha256']}|{seq_len}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def evaluate_rows(study: Study, model, *, method: str, mixture: list[str], weights: list[float], model_id: str,
                  merge_s: float = 0.0, skip: set[str] = frozenset(), replicate: int = 0,
                  spec: str | None = None, budget: str | None = None) -> list[dict]:
    """One row per eval set (those not in `skip`), with the raw sums and FLOPs.

    `budget` names the ground truth a union row is (sum | unit | tokens=N); None for proxies."""
    cfg = study.cfg
    _, n_nonembed = count_params(model)
    device = next(model.parameters()).device
    rows = []
    for ev in study.evals:
        if row_id(method, model_id, ev, cfg.eval.seq_len) in skip:
            continue
        stats = evaluate_tokens(model, study.eval_tokens[ev["domain"]], study.byte_len, seq_len=cfg.eval.seq_len,
                                batch_size=cfg.eval.batch_size, name=f"eval set {ev['domain']}",
                                precision=study.precision)
        rows.append(make_row(study, ev, stats, method=method, mixture=mixture, weights=weights, model_id=model_id,
                             merge_s=merge_s if not rows else 0.0, n_nonembed=n_nonembed, device=device,
                             replicate=replicate, spec=spec, budget=budget))
    return rows


def make_row(study: Study, ev: dict, stats: dict, *, method: str, mixture: list[str], weights: list[float],
             model_id: str, n_nonembed: int, device, merge_s: float = 0.0, replicate: int = 0,
             spec: str | None = None, budget: str | None = None) -> dict:
    """A `mixture_perplexity` row from an evaluation's sums (evaluate_tokens' or batched.window_stats')."""
    return {
        "row_id": row_id(method, model_id, ev, study.cfg.eval.seq_len), "mixture": sorted(mixture),
        "weights": weights, "k": len(mixture), "uniform": len(set(round(w, 12) for w in weights)) <= 1,
        "method": method, "eval_set": ev["domain"], "eval_sha256": ev["data_sha256"], **stats,
        "merge_s": merge_s, "flops": 2.0 * n_nonembed * stats["n_tokens"],
        "model_id": model_id, "seed_id": study.seed["model_id"], "device": str(device),
        "replicate": replicate, "spec": spec or "+".join(sorted(mixture)), "budget": budget,
        "eval_precision": eval_precision(device, study.precision), "created_at": _now()}


def attach_cost(rows: list[dict], cost: dict) -> None:
    """Share a metered block's energy among its rows in proportion to their seconds."""
    total = sum(r["eval_s"] + (r.get("merge_s") or 0) for r in rows) or 1.0
    for r in rows:
        share = (r["eval_s"] + (r.get("merge_s") or 0)) / total
        r["energy_kwh"] = cost["energy_kwh"] * share
        r["co2_kg"] = cost["co2_kg"] * share
        r["energy_method"] = cost["energy_method"] + " (block shared by eval seconds)"


def write_rows(pool: Pool, rows: list[dict], table: str = "mixture_perplexity") -> None:
    """Append-only results file (the truth), then the index. `screened_perplexity` rows (ablate/screen.py)
    live in screened/, apart from the full evaluations in results/."""
    if not rows:
        return
    folder = pool.results_dir if table == "mixture_perplexity" else pool.root / "screened"
    name = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
    blob = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    atomic_write_bytes(folder / name, blob)
    faults.point("results.written")
    Index(pool).upsert(table, rows)


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


def score_reference_models(study: Study, mixtures: list[list[str]], done: set[str]) -> list[dict]:
    """Rows for what exists to compare against: the seed and every trained union of the mixtures
    (each ground truth: budget, weights, and every replicate, whose spread is the noise floor)."""
    from ablate.energy import Meter

    todo = [("seed", [], study.seed["model_id"], 0, [], None)]
    for mix in mixtures:
        if len(mix) > 1:
            todo += [("union", mix, m["model_id"], m.get("replicate", 0), m.get("weights") or [1.0 / len(mix)] * len(mix),
                      m.get("budget", "sum")) for m in study.truths(mix)]
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
                       label: str | None = None) -> dict[tuple, str]:
    """Rows for an evaluated proxy (merged, task-sum): `build(pool, seed_id, members, weights)` gives each
    (mixture, weights)'s state dict; evaluated on the study's eval sets unless cached, priced, written.
    Returns {(mixture, weights): model id}."""
    import time

    from ablate.energy import Meter
    from ablate.progress import bar

    cfg, pool = study.cfg, study.pool
    done = existing_rows(pool, study.precision)
    ids, todo = {}, []
    for mix, weights in mixtures:
        members = [study.unit_member(u) for u in mix]
        mid = ids[(tuple(mix), tuple(weights))] = proxies.model_id(method, members, weights)
        if not all(row_id(method, mid, ev, cfg.eval.seq_len) in done for ev in study.evals):
            todo.append((mix, weights, members, mid))
    model = model_from_config(seed_config(pool, study.seed["model_id"]), study.device) if todo else None
    proxy = proxies.REGISTRY.get(method)
    into = getattr(proxy, "build_into", None) if proxy is not None and build == proxy.build else None
    rows = []
    with Meter(cfg.energy) as meter, bar(label or method, len(todo)) as update:
        for mix, weights, members, mid in todo:
            t0 = time.perf_counter()
            if into is not None:  # straight into the model's parameters: no state dict beside it
                into(model, pool, members, weights)
            else:
                load_state(model, build(pool, study.seed["model_id"], members, weights, device=study.device),
                           f"{method} weights")
            rows += evaluate_rows(study, model, method=method, mixture=mix, weights=weights, model_id=mid,
                                  merge_s=time.perf_counter() - t0, skip=done)
            update(1)
    attach_cost(rows, meter.result)
    write_rows(pool, rows)
    return ids


def score_mixture(cfg: StudyConfig, pool: Pool, items: list[str], weights: str | list[float] | None = None,
                  eval_names: list[str] | None = None, force: bool = False) -> list[dict]:
    """Merged rows for one mixture plus union/seed rows for comparison; returns every row (new or cached).

    `items` are units or macro groups `a+b`; `weights` (one per item) follow the items' order.
    """
    import time

    from ablate.energy import Meter
    from ablate.inplace import merged_model
    from ablate.merge import merge_id, parse_mixture

    unit_ids, weights, spec = parse_mixture(items, weights)
    study = load_study(cfg, pool, eval_names)
    members = [study.unit_member(u) for u in unit_ids]
    mid = merge_id(members, weights)
    done = set() if force else existing_rows(pool, study.precision)
    rows = []
    if not all(row_id("merged", mid, ev, cfg.eval.seq_len) in done for ev in study.evals):
        with Meter(cfg.energy) as meter:
            t0 = time.perf_counter()
            model = merged_model(pool, study.seed["model_id"], members, weights, device=study.device,
                                 full_hash=cfg.verify_hash)
            merge_s = time.perf_counter() - t0
            rows = evaluate_rows(study, model, method="merged", mixture=unit_ids, weights=weights,
                                 model_id=mid, merge_s=merge_s, skip=done, spec=spec)
        attach_cost(rows, meter.result)
    rows += score_reference_models(study, [unit_ids], done)
    write_rows(pool, rows)
    from ablate.calibrate import refresh

    refresh(pool, cfg.eval.seq_len, log=lambda *a: None)  # the `calibrated` rows, when enough unions exist
    # the merged row, and the fitted proxies' rows for each ground truth (calibrate.refresh writes them)
    methods = ["merged"] + [f"{m}:{b}" for m in ("calibrated", "regression") for b in BUDGETS]
    ids = [row_id(m, mid, ev, cfg.eval.seq_len) for ev in study.evals for m in methods]
    ids += [row_id("seed", study.seed["model_id"], ev, cfg.eval.seq_len) for ev in study.evals]
    wanted = [round(w, 6) for w in weights]
    for truth in study.truths(unit_ids) if len(unit_ids) > 1 else []:
        uniform = [1.0 / len(unit_ids)] * len(unit_ids)  # a union trained before weights existed
        if truth.get("replicate", 0) == 0 and [round(w, 6) for w in truth.get("weights", uniform)] == wanted:
            ids += [row_id("union", truth["model_id"], ev, cfg.eval.seq_len) for ev in study.evals]
    marks = ", ".join("?" for _ in ids)
    cols, table = Index(pool).query(
        f"SELECT method, coalesce(budget, '') AS budget, eval_set, ppl, bits_per_byte, n_tokens, eval_s "
        f"FROM mixture_perplexity WHERE row_id IN ({marks}) ORDER BY eval_set, method, budget", ids)
    return [dict(zip(cols, r)) for r in table]
