"""The members a study needs: corpus → units → seed → one member per unit, then its ground-truth unions.

How to run (from Python; `ablate demo` and `ablate fidelity` both build their studies with these):
    from ablate.train.members import build_members, train_truths, union_plan
    units = build_members(cfg, pool)                        # reuses whatever the pool already has
    train_truths(cfg, pool, union_plan(units, "pairs"), "unit", noise=1)

One home for both pipelines, so the demo and the protocol can never train a study differently.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from ablate.core.config import StudyConfig
from ablate.core.progress import price_line
from ablate.data.corpus import ensure_debian_corpus, study_corpus
from ablate.data.units import split_units
from ablate.store.pool import Pool
from ablate.study.budgets import polish_config, short_config
from ablate.train.loop import train_member
from ablate.train.seed import make_seed


def union_plan(unit_ids: list[str], which: str) -> list[list[str]]:
    """Every mixture of 2 .. n units ("all"), only the pairs ("pairs"), or none ("none")."""
    top = {"all": len(unit_ids), "pairs": 2, "none": 1}[which]
    return [list(c) for k in range(2, top + 1) for c in itertools.combinations(unit_ids, k)]


def build_members(cfg: StudyConfig, pool: Pool, log=print, steps: str = "") -> list[str]:
    """Corpus (Debian) → units → seed → one member per unit; returns the unit ids. Reuses what exists."""
    corpus_dir = Path(cfg.corpus.path)
    if cfg.corpus.source == "debian":
        ensure_debian_corpus(corpus_dir, cfg.all_domains, webster_max_bytes=cfg.corpus.webster_max_bytes,
                             max_bytes_per_domain=cfg.corpus.max_bytes_per_domain, log=lambda m: log(steps + m))
    log(f"{steps}holding out eval sets and cutting base units")
    split = split_units(cfg, pool, study_corpus(cfg), log=log)
    units = sorted(r["unit_id"] for r in split["rows"] if r["kind"] == "unit")
    log(f"      {len(units)} units of {cfg.units.unit_tokens:,} tokens: {', '.join(units)}")
    log(f"{steps}seed model")
    log(price_line(make_seed(cfg, pool, log=log)))
    log(f"{steps}one member per unit ({len(units)})")
    for u in units:
        log(price_line(train_member(cfg, pool, [u], log=log)))
    return units


def train_unit_replicates(cfg: StudyConfig, pool: Pool, units: list[str], replicates: int, log=print) -> None:
    """Each unit's member again with data orders 1..replicates: two runs on the same data differ only by the
    run's private drift, which a merge of k members shrinks and a real union keeps (scoring/proxies/private.py)."""
    for r in range(1, replicates + 1):
        for u in units:
            log(price_line(train_member(cfg, pool, [u], replicate=r, log=log)))


def train_short_unions(cfg: StudyConfig, pool: Pool, mixtures: list[list[str]], budget: str | None,
                       log=print) -> None:
    """Each mixture again on a fraction of the equal-compute budget (`budget`: budgets.short_budget's label,
    tokens=N), with a full union's steps on a smaller batch (budgets.short_config): what the `short` proxy ranks
    by, a forgetting-aware guess at a fraction of a union's cost."""
    if budget is None:
        return
    small = short_config(cfg)
    for mix in mixtures:
        log(price_line(train_member(small, pool, mix, tokens=budget.removeprefix("tokens="), log=log)))


def train_polish_unions(cfg: StudyConfig, pool: Pool, mixtures: list[list[str]], budget: str | None,
                        log=print) -> None:
    """Each mixture's merge trained further on the mixture for a fraction of a union's tokens and steps (`budget`:
    budgets.polish_budget's label; budgets.polish_config starts it from the merge), in `fidelity.polish_orders` data
    orders: what the `polish` proxy ranks by."""
    if budget is None:
        return
    polished = polish_config(cfg)
    for r in range(cfg.fidelity.polish_orders):  # one data order after another: a run cut short has the first
        for mix in mixtures:
            log(price_line(train_member(polished, pool, mix, tokens=budget.removeprefix("tokens="), replicate=r,
                                        log=log)))


def train_truths(cfg: StudyConfig, pool: Pool, mixtures: list[list[str]], budget: str,
                 noise: list[list[str]], log=print) -> None:
    """The ground truth of every mixture at one budget, then a second data order of each `noise` mixture
    (replicate 1): the run-to-run noise floor."""
    for mix in mixtures:
        log(price_line(train_member(cfg, pool, mix, budget=budget, log=log)))
    for mix in noise:
        log(price_line(train_member(cfg, pool, mix, budget=budget, replicate=1, log=log)))
