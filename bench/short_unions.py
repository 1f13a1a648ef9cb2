"""Short unions as a forgetting proxy: which recipe ranks the seed's own domains as the full unions do?

How to run (on a fidelity study whose pool `ablate fidelity` built; ~2 min for 11 short unions at one thread):
    .venv/bin/python bench/short_unions.py configs/fidelity/reference-works.yaml --fraction 0.5 --data-seed 7

Not a speed benchmark: a measurement behind `fidelity.short_unions` (budgets.short_config). The pool is copied to
--work (the study's own pool is written only with --in-place), every truth mixture is trained again on `fraction` of one unit's
tokens, and each seed-known eval set's ranking by those short unions is scored against the full unions, beside the
merge's, as the protocol scores it at m = 0 (Spearman, the pick's regret, whether it is within the noise floor).
--steps fraction: the pre-2026-12-07 recipe, fewer steps on the full batch; --steps full (the default, and what
`ablate fidelity` trains): a full union's steps and schedule on a batch `fraction` the size. --data-seed: another
data order for the short unions only (the full unions stay as they are).
Measured (2026-12, the three protocol studies; seed-known sets manpages, webster, bible, fiction, pydocs, computing;
merge median Spearman 0.83, worst regret 3.1 %):
- half the tokens, full steps: median 0.90 (data seed 0), 0.87 (data seed 7), 0.93 (data seed 13); worst regret
  1.3 %, 3.1 %, 0.9 %; every pick within noise in all three;
- half the tokens, half the steps: median 0.80, worst regret 2.1 %;
- a quarter (an eighth) of the tokens, full steps: median 0.74 (0.70), two picks outside the noise floor at 11 %.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from ablate.core.config import load_config
from ablate.fidelity.calibrate import is_uniform, score_predictions
from ablate.scoring import proxies
from ablate.scoring.score import score_reference_models
from ablate.scoring.uncertainty import noise_floor
from ablate.store.index import recipe_id
from ablate.store.pool import Pool
from ablate.store.results import existing_rows, write_rows
from ablate.study.budgets import seed_known, short_budget, short_config, target_kind
from ablate.study.context import load_study, member_recipe
from ablate.train.loop import train_member
from ablate.workflows.fidelity_runs import truth_mixtures


def copy_pool(src: Path, dst: Path) -> Pool:
    """The study's pool, copied once to `dst` (later runs reuse the copy and its short unions)."""
    if not dst.exists():
        shutil.copytree(src, dst)
    return Pool(dst)


def short_cfg(path: str, pool: Path, fraction: float, steps: str, data_seed: int):
    """The study config as the short unions train (--steps full: short_config's batch; fraction: the full batch)."""
    cfg = load_config(path, [f"pool={pool}", f"fidelity.short_unions={fraction}", f"train.data_seed={data_seed}"])
    return short_config(cfg) if steps == "full" else cfg


def train_shorts(cfg, small, pool: Pool, label: str) -> list[list[str]]:
    units = sorted(m["units"][0] for m in pool.iter_metas("unit") if m.get("replicate", 0) == 0)
    truths = truth_mixtures(units, cfg.fidelity.truth_mixtures, cfg.fidelity.sample_seed)
    for mix in truths:
        train_member(small, pool, mix, tokens=label.removeprefix("tokens="), log=lambda *a: None)
    study = load_study(cfg, pool)
    write_rows(pool, score_reference_models(study, truths, existing_rows(pool, study.precision)))
    return truths


def seed_known_rankings(cfg, pool: Pool, short: tuple[str, str], truths: list[list[str]]) -> list[dict]:
    wanted = {tuple(sorted(m)) for m in truths}  # the truth mixtures' uniform unions: what has a short union
    cases = [c for c in proxies.load_cases(pool, short) if c.mixture in wanted and is_uniform(c.weights)]
    predictions = {name: dict(zip((c.key for c in cases), proxies.get(name).predict(cases, {}, "unit")))
                   for name in ("merged", "short")}
    return seed_known_rows(cfg, pool, predictions, truths)


def seed_known_rows(cfg, pool: Pool, predictions: dict[str, dict], truths: list[list[str]]) -> list[dict]:
    """Each seed-known eval set's ranking by each named prediction ({case key: log ppl}), scored against the full
    equal-compute unions of `truths` as the protocol scores it at m = 0 (bench/merge_polish.py scores by it too)."""
    wanted = {tuple(sorted(m)) for m in truths}
    full = {k: v for k, v in proxies.load_truths(pool, "unit").items() if k[0] in wanted and is_uniform(k[1])}
    known, noise, out = seed_known(cfg, {k[2] for k in full}, pool), noise_floor(pool, "unit"), []
    for name, pred in predictions.items():
        for q in score_predictions({k: v for k, v in pred.items() if k in full}, full, noise):
            if target_kind(q["eval_set"], set(cfg.units.domains), known) == "seed-known":
                out.append({"proxy": name, **q})
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--steps", choices=("full", "fraction"), default="full")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/ablate-short-unions")
    ap.add_argument("--in-place", action="store_true", help="train into the study's own pool (what `ablate fidelity` "
                    "would train with fidelity.short_unions at --steps full --data-seed 0): for a pool too large to copy")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    cfg = load_config(a.config)
    pool = Pool(cfg.pool) if a.in_place else copy_pool(Path(cfg.pool), Path(a.work) / cfg.name)
    small = short_cfg(a.config, pool.root, a.fraction, a.steps, a.data_seed)
    label = short_budget(small)
    recipe = recipe_id(member_recipe(small).key(), 0)  # the short unions' own recipe: their rows alone are read
    rows = seed_known_rankings(small, pool, (label, recipe), train_shorts(cfg, small, pool, label))
    for r in rows:
        print(f"{cfg.name:16s} {r['eval_set']:10s} {r['proxy']:7s} Spearman {r['spearman']:+.2f}  regret "
              f"{100 * r['regret']:.1f} %  {'within' if r['top1_within_noise'] else 'OUTSIDE'} the noise floor")
    for name in ("merged", "short"):
        sp = [r["spearman"] for r in rows if r["proxy"] == name]
        print(f"{cfg.name}: {name} median Spearman {np.median(sp):.2f}")
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
