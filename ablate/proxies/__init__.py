"""Proxy methods: predict a mixture's ground-truth perplexity without training the mixture.

How to run:
    ablate fidelity                      # scores every method here on the studies in configs/fidelity
    ablate search --target quotes --method calibrated --truth unit

One entry per method in a table (mergekit's merge_methods/registry.py); `get(name)`.
Two kinds, scored by the same code (ablate/protocol.py):
- evaluated: build a model from the pool's members and measure its perplexity (`merged`, the
  paper's uniform parameter average; `task-sum`, the seed plus the sum of the units' task
  vectors). Their rows are in `mixture_perplexity` under the method's name.
- fitted: a formula over evaluated rows fitted on a few trained unions of one ground truth
  (`calibrated`, `regression`). They are scored only on unions they were not fitted on.

Every method answers predict(cases, known, budget) -> one log perplexity per case, where
`known` holds the ground truth of the unions it may learn from and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ablate.errors import UsageError
from ablate.index import Index
from ablate.pool import Pool

Key = tuple  # (mixture tuple, rounded weights tuple, eval set)


def wkey(weights) -> tuple[float, ...]:
    return tuple(round(float(w), 6) for w in weights)


@dataclass(frozen=True)
class Case:
    """One mixture on one eval set, with everything a proxy may look at (never its truth)."""

    mixture: tuple[str, ...]
    weights: tuple[float, ...]
    eval_set: str
    merged: float  # log ppl of the parameter average
    task_sum: float | None  # log ppl of seed + sum of task vectors, where evaluated
    members: tuple[float, ...]  # log ppl of each unit's member alone, in mixture order
    relation: str  # "own": a unit of the eval set's domain is in the mixture; "seed": the seed
    #                trained on that domain; "other": neither

    @property
    def key(self) -> Key:
        return (self.mixture, wkey(self.weights), self.eval_set)

    @property
    def k(self) -> int:
        return len(self.mixture)

    @property
    def k_eff(self) -> float:
        return float(1.0 / np.sum(np.asarray(self.weights) ** 2))

    def composition(self, units: list[str], budget: str) -> list[float]:
        """Epochs of each unit's data the ground truth trains on (RegMix's mixture features)."""
        scale = len(self.mixture) if budget == "sum" else 1.0
        w = dict(zip(self.mixture, self.weights))
        return [w.get(u, 0.0) * scale for u in units]


class Proxy(Protocol):
    name: str
    fitted: bool  # learns from unions: scored out of sample only
    evaluated: bool  # builds and measures a model per mixture
    summary: str

    def predict(self, cases: list[Case], known: dict[Key, float], budget: str) -> np.ndarray: ...


def _registry() -> dict[str, Proxy]:
    from ablate.proxies import calibrated, merged, regression, task_sum

    return {p.name: p for p in (merged.PROXY, task_sum.PROXY, calibrated.PROXY, regression.PROXY)}


def names() -> list[str]:
    return list(_registry())


def get(name: str) -> Proxy:
    table = _registry()
    if name not in table:
        raise UsageError(f"unknown proxy method {name!r}: use {', '.join(table)}")
    return table[name]


# -- reading cases and truths from a pool ------------------------------------------------------
def _rows(pool: Pool, sql: str, params: list | None = None) -> list[dict]:
    cols, rows = Index(pool).query(sql, params)
    return [dict(zip(cols, r)) for r in rows]


def load_cases(pool: Pool) -> list[Case]:
    """Every merged row as a Case (with task-sum and the members' own perplexities where known)."""
    merged = _rows(pool, "SELECT mixture, weights, eval_set, ln(ppl) AS lp FROM mixture_perplexity "
                         "WHERE method = 'merged'")
    tsum = {(tuple(r["mixture"]), wkey(r["weights"]), r["eval_set"]): r["lp"] for r in _rows(
        pool, "SELECT mixture, weights, eval_set, ln(ppl) AS lp FROM mixture_perplexity WHERE method = 'task-sum'")}
    domain = {r["unit_id"]: r["domain"] for r in _rows(pool, "SELECT unit_id, domain FROM units WHERE kind = 'unit'")}
    seed_domains = {r["domain"] for r in _rows(pool, "SELECT domain FROM units WHERE kind = 'seedmix'")}
    single = {(r["mixture"][0], r["eval_set"]): r["lp"] for r in merged if len(r["mixture"]) == 1}
    cases = []
    for r in merged:
        mix, ev = tuple(r["mixture"]), r["eval_set"]
        if any((u, ev) not in single for u in mix):
            continue  # a mixture whose units were not all scored alone on this eval set
        relation = ("own" if any(domain.get(u) == ev for u in mix) else
                    "seed" if ev in seed_domains else "other")
        # one unit's task vector summed is that unit's member: its merged row is its task-sum row
        ts = r["lp"] if len(mix) == 1 else tsum.get((mix, wkey(r["weights"]), ev))
        cases.append(Case(mix, wkey(r["weights"]), ev, r["lp"], ts,
                          tuple(single[(u, ev)] for u in mix), relation))
    return sorted(cases, key=lambda c: (c.eval_set, c.k, c.mixture, c.weights))


def load_truths(pool: Pool, budget: str, replicate: int = 0) -> dict[Key, float]:
    """Ground-truth log ppl of every trained union of one budget (k >= 2), by case key."""
    rows = _rows(pool, "SELECT mixture, weights, eval_set, ln(ppl) AS lp FROM mixture_perplexity "
                       "WHERE method = 'union' AND coalesce(budget, 'sum') = ? AND coalesce(replicate, 0) = ?",
                 [budget, replicate])
    return {(tuple(r["mixture"]), wkey(r["weights"]), r["eval_set"]): r["lp"] for r in rows}


def free_truths(cases: list[Case]) -> dict[Key, float]:
    """The union of one unit is that unit's member (at its own budget, for either question)."""
    return {c.key: c.merged for c in cases if c.k == 1}


def evaluate_proxy(name: str, study, mixtures: list[list[str]], log=print) -> int:
    """Rows for an evaluated proxy on uniform mixtures (cached rows skipped); 0 for a fitted one."""
    proxy = get(name)
    if not proxy.evaluated or name == "merged":  # merged rows come from `sweep`
        return 0
    from ablate.score import score_built_models

    return score_built_models(study, mixtures, name, proxy.build, log=log)


def model_id(method: str, members: list[str], weights: list[float]) -> str:
    """The id of an evaluated proxy's model: the merge id for `merged` (as rows have always had)."""
    from ablate.merge import merge_id

    mid = merge_id(members, weights)
    return mid if method == "merged" else f"{method}-" + mid.removeprefix("merge-")
