"""Proxy methods: predict a mixture's ground-truth perplexity without training the mixture.

How to run:
    ablate fidelity                      # scores every method here on the studies in configs/fidelity
    ablate search --target quotes --method calibrated --truth unit

One entry per method in a table (mergekit's merge_methods/registry.py); `get(name)`.
Two kinds, scored by the same code (ablate/fidelity/protocol.py):
- evaluated: build a model from the pool's members and measure its perplexity (`merged`, the
  paper's uniform parameter average; `task-sum`, the seed plus the sum of the units' task
  vectors). Their rows are in `mixture_perplexity` under the method's name.
- fitted: a formula over evaluated rows fitted on a few trained unions of one ground truth
  (`calibrated`, `regression`). They are scored only on unions they were not fitted on.

Every method answers predict(cases, known, budget) -> one log perplexity per case, where
`known` holds the ground truth of the unions it may learn from and nothing else.
"""

from __future__ import annotations

from ablate.core.errors import UsageError
from ablate.scoring.merge import merge_id
from ablate.scoring.proxies import (
    additive,
    calibrated,
    ensemble,
    features,
    merged,
    own_additive,
    polish,
    private,
    regression,
    scaled,
    short,
    task_sum,
    unit_shifts,
)
from ablate.scoring.proxies.base import Case, Key, Proxy, free_truths, wkey  # noqa: F401  (the package's interface)
from ablate.store.index import Index
from ablate.store.pool import Pool

# a fitted proxy needs this many trained unions of its ground truth before it may predict
MIN_UNIONS = 3

REGISTRY: dict[str, Proxy] = {p.name: p for p in (merged.PROXY, task_sum.PROXY, additive.PROXY, own_additive.PROXY,
                                                   calibrated.PROXY, regression.PROXY, ensemble.PROXY,
                                                   scaled.PROXY, features.PROXY, calibrated.ON_ENSEMBLE,
                                                   private.PROXY, private.ON_ENSEMBLE, short.PROXY,
                                                   unit_shifts.PROXY, polish.PROXY)}


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> Proxy:
    table = REGISTRY
    if name not in table:
        raise UsageError(f"unknown proxy method {name!r}: use {', '.join(table)}")
    return table[name]


def scored(name: str, cases: list[Case]) -> bool:
    """Whether the pool holds the rows `name` predicts from for every case (task-sum and ensemble rows are
    written only by the commands that score them: `ablate fidelity`, `sweep --method`)."""
    need = {"task-sum": lambda c: c.k == 1 or c.task_sum is not None,
            "ensemble": lambda c: c.ensemble is not None, "features": lambda c: c.ensemble is not None,
            "calibrated-ensemble": lambda c: c.ensemble is not None,
            "private": lambda c: c.k == 1 or c.drift is not None,
            "private-ensemble": lambda c: c.ensemble is not None and (c.k == 1 or c.bonus is not None),
            "short": lambda c: c.k == 1 or c.short is not None,
            "polish": lambda c: c.k == 1 or c.polish is not None}.get(name)
    return need is None or all(need(c) for c in cases)


def union_keys(truths: dict) -> list[tuple]:
    """(mixture, weights) of every multi-unit union in a truth table."""
    return sorted({(m, w) for m, w, _ in truths if len(m) > 1})


# -- reading cases and truths from a pool ------------------------------------------------------
def load_cases(pool: Pool, short: tuple[str, str] | None = None,
               polish: tuple[str, str, int] | None = None) -> list[Case]:
    """Every merged row as a Case (with task-sum and the members' own perplexities where known; with `short`,
    a fidelity study's short unions: (budget label, recipe id), study.context.short_unions; with `polish`, its
    polished merges, (budget label, recipe id, data orders), study.context.polish_unions)."""
    index = Index(pool)
    merged = index.rows("SELECT mixture, weights, eval_set, ln(ppl) AS lp FROM mixture_perplexity "
                        "WHERE method = 'merged'")
    tsum = _by_key(pool, "method = 'task-sum'")
    ens = _by_key(pool, "method = 'ensemble'")
    scaled: dict = {}
    for r in index.rows("SELECT mixture, weights, eval_set, method, ln(ppl) AS lp FROM mixture_perplexity "
                        "WHERE method LIKE 'scaled@%'"):
        key = (tuple(r["mixture"]), wkey(r["weights"]), r["eval_set"])
        scaled.setdefault(key, {})[float(r["method"].split("@", 1)[1])] = r["lp"]
    domain = {r["unit_id"]: r["domain"] for r in index.rows("SELECT unit_id, domain FROM units WHERE kind = 'unit'")}
    seed_domains = {r["domain"] for r in index.rows("SELECT domain FROM units WHERE kind = 'seedmix'")}
    single = {(r["mixture"][0], r["eval_set"]): r["lp"] for r in merged if len(r["mixture"]) == 1}
    drift = private.penalties(index)
    shorts = load_truths(pool, short[0], recipe=short[1]) if short else {}
    polished = polished_means(pool, *polish) if polish else {}
    seed = {r["eval_set"]: r["lp"] for r in Index(pool).rows("SELECT eval_set, ln(ppl) AS lp FROM mixture_perplexity "
                                                             "WHERE method = 'seed'")}
    cases = []
    for r in merged:
        mix, ev = tuple(r["mixture"]), r["eval_set"]
        if any((u, ev) not in single for u in mix):
            continue  # a mixture whose units were not all scored alone on this eval set
        relation = ("own" if any(domain.get(u) == ev for u in mix) else
                    "seed" if ev in seed_domains else "other")
        # one unit's task vector summed is that unit's member: its merged row is its task-sum row
        ts = r["lp"] if len(mix) == 1 else tsum.get((mix, wkey(r["weights"]), ev))
        key = (mix, wkey(r["weights"]), ev)
        measured = all((u, ev) in drift for u in mix)
        cases.append(Case(mix, wkey(r["weights"]), ev, r["lp"], ts, tuple(single[(u, ev)] for u in mix), relation,
                          seed.get(ev), ens.get(key), scaled.get(key),
                          tuple(drift[(u, ev)][0] for u in mix) if measured else None,
                          tuple(drift[(u, ev)][1] for u in mix) if measured else None, shorts.get(key),
                          polished.get(key)))
    return sorted(cases, key=lambda c: (c.eval_set, c.k, c.mixture, c.weights))


def polished_means(pool: Pool, budget: str, recipe: str, orders: int) -> dict[Key, float]:
    """Each mixture's polished merges' mean log ppl over its `orders` data orders (replicates 0..orders-1); a
    mixture missing one of them has none (a mean of fewer orders is another, noisier proxy)."""
    runs = [load_truths(pool, budget, replicate=r, recipe=recipe) for r in range(orders)]
    return {k: sum(run[k] for run in runs) / orders for k in runs[0] if all(k in run for run in runs)}


def _by_key(pool: Pool, where: str) -> dict[Key, float]:
    """{(mixture, weights, eval set): log ppl} of one evaluated proxy's rows."""
    return {(tuple(r["mixture"]), wkey(r["weights"]), r["eval_set"]): r["lp"] for r in Index(pool).rows(
        f"SELECT mixture, weights, eval_set, ln(ppl) AS lp FROM mixture_perplexity WHERE {where}")}


def load_truths(pool: Pool, budget: str, replicate: int = 0, recipe: str | None = None) -> dict[Key, float]:
    """Ground-truth log ppl of every trained union of one budget (k >= 2), by case key; with `recipe`, only the
    unions trained with that recipe id (models.recipe_id)."""
    only = " AND model_id IN (SELECT model_id FROM models WHERE recipe_id = ?)" if recipe else ""
    rows = Index(pool).rows("SELECT mixture, weights, eval_set, ln(ppl) AS lp FROM mixture_perplexity "
                            "WHERE method = 'union' AND coalesce(budget, 'sum') = ? AND coalesce(replicate, 0) = ?"
                            + only, [budget, replicate] + ([recipe] if recipe else []))
    return {(tuple(r["mixture"]), wkey(r["weights"]), r["eval_set"]): r["lp"] for r in rows}


def model_id(method: str, members: list[str], weights: list[float]) -> str:
    """The id of an evaluated proxy's model: the merge id for `merged` (as rows have always had)."""
    mid = merge_id(members, weights)
    return mid if method == "merged" else f"{method}-" + mid.removeprefix("merge-")
