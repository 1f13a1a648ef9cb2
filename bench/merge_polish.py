"""Merge, then polish: does a short run started from the merged model see what a union forgets?

How to run (on a fidelity study whose pool `ablate fidelity` built; a copy of the pool is trained in):
    .venv/bin/python bench/merge_polish.py configs/fidelity/reference-works.yaml --fraction 0.25 --data-seeds 0,7

Not a speed benchmark: a measurement for the forgetting proxies (docs/fidelity.md, "Forgetting"). A merge sits
closer to the seed than the union it stands for (a third of a union's task vector lies outside its members' span),
and a short union from the seed sees forgetting but pays for the members' shared part again. This starts each truth
mixture's short run from the merge of its members instead of from the seed, on `fraction` of one unit's tokens
(--steps fraction: that fraction of a union's steps on the full batch, the schedule compressed; --steps full: all
of a union's steps on a batch `fraction` the size), in each data order of --data-seeds, and scores each seed-known
eval set's ranking by those runs (each order alone, and the mean of their log ppl) against the full unions, beside
the merge's, as bench/short_unions.py scores the short unions from the seed. What `ablate fidelity` trains for the
`polish` proxy (fidelity.polish_unions, polish_orders) is this recipe at --steps fraction.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import short_unions as su

from ablate.core.config import load_config
from ablate.models.model import load_state
from ablate.scoring import proxies
from ablate.scoring.merge import merge_members
from ablate.scoring.score import score_reference_models
from ablate.store.index import recipe_id
from ablate.store.pool import Pool
from ablate.store.results import existing_rows, row_id, write_rows
from ablate.study.budgets import short_budget
from ablate.study.context import load_study, member_recipe
from ablate.train import loop
from ablate.workflows.fidelity_runs import truth_mixtures


def start_from_merges(study) -> dict:
    """Make train_member start from the merge of `current["mix"]`'s members instead of the seed."""
    original, current = loop.load_member, {}

    def merged_start(pool, model_id, full_hash=False, device=None, config=None):
        model = original(pool, model_id, full_hash=full_hash, device=device, config=config)
        members = [study.unit_member(u) for u in current["mix"]]
        load_state(model, merge_members(pool, members), "the merge of " + "+".join(current["mix"]))
        return model

    loop.load_member = merged_start
    return current


def train_polished(cfg, small, pool: Pool, label: str) -> list[list[str]]:
    units = sorted(m["units"][0] for m in pool.iter_metas("unit") if m.get("replicate", 0) == 0)
    truths = truth_mixtures(units, cfg.fidelity.truth_mixtures, cfg.fidelity.sample_seed)
    current, trained = start_from_merges(load_study(cfg, pool)), []
    for mix in truths:
        current["mix"] = mix
        # force: the copy may hold a short union from the seed under the same recipe id, which this replaces
        meta = loop.train_member(small, pool, mix, tokens=label.removeprefix("tokens="), force=True,
                                 log=lambda *a: None)
        trained.append(meta["model_id"])
    study = load_study(cfg, pool)
    stale = {row_id("union", m, ev, study.cfg.eval.seq_len) for m in trained for ev in study.evals}
    write_rows(pool, score_reference_models(study, truths, existing_rows(pool, study.precision) - stale))
    return truths


def polished(cfg, path: str, a, seed: int) -> dict:
    """One data order's polished runs (trained into their own copy of the pool once, a marker file says so), by case
    key."""
    work = Path(a.work) / f"{a.steps}-{a.fraction:g}-ds{seed}"
    pool = su.copy_pool(Path(cfg.pool), work / cfg.name)
    small = su.short_cfg(path, pool.root, a.fraction, a.steps, seed)
    label = short_budget(small)
    marker = pool.root / "polished.json"
    if not marker.exists():
        train_polished(cfg, small, pool, label)
        marker.write_text(json.dumps({"fraction": a.fraction, "steps": a.steps, "data_seed": seed}))
    return proxies.load_truths(pool, label, recipe=recipe_id(member_recipe(small).key(), 0))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--steps", choices=("full", "fraction"), default="fraction")
    ap.add_argument("--data-seeds", default="0", help="comma list: each data order alone, then their mean")
    ap.add_argument("--work", default="/tmp/ablate-merge-polish")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    cfg = load_config(a.config)
    seeds = [int(s) for s in a.data_seeds.split(",")]
    runs = {f"polish ds{s}": polished(cfg, a.config, a, s) for s in seeds}
    pool = Pool(cfg.pool)
    merged = {c.key: c.merged for c in proxies.load_cases(pool) if c.k > 1}
    predictions = {"merged": merged, **runs}
    if len(seeds) > 1:
        keys = set.intersection(*(set(r) for r in runs.values()))
        predictions["polish mean"] = {k: float(np.mean([r[k] for r in runs.values()])) for k in keys}
    units = sorted(m["units"][0] for m in pool.iter_metas("unit") if m.get("replicate", 0) == 0)
    rows = su.seed_known_rows(cfg, pool, predictions,
                              truth_mixtures(units, cfg.fidelity.truth_mixtures, cfg.fidelity.sample_seed))
    for r in rows:
        print(f"{cfg.name:16s} {r['eval_set']:10s} {r['proxy']:12s} Spearman {r['spearman']:+.2f}  regret "
              f"{100 * r['regret']:.1f} %  {'within' if r['top1_within_noise'] else 'OUTSIDE'} the noise floor")
    for name in predictions:
        sp = [r["spearman"] for r in rows if r["proxy"] == name]
        print(f"{cfg.name}: {name} median Spearman {np.median(sp):.2f}")
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
