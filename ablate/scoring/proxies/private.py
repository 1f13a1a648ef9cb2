"""`private` and `private-ensemble`: the merge (or the ensemble) plus what it misses of a real union's own drift.

Why: a union trained on k units keeps a private part of its own (its run's data order: 45–65 % of its task
vector lies outside its members' span), while the average of k members shrinks their private parts to
Σ w_i² of their size. So a merge sits closer to the seed and forgets less than the union it stands for, and on
the seed's own domains (a `seed-known` target) that is what is being ranked. A second member per unit measures
the private part on each eval set (scoring/drift.py): merging a member with its replicate halves it, so
A_u = 2·(mean of the two members − their merge) is what the whole private part costs in log ppl. A union of
weights w pays Σ w_u·A_u; its merge paid Σ w_u²·A_u:

    private(w)          = merged(w)   + Σ_u w_u (1 − w_u) A_u
    private-ensemble(w) = ensemble(w) + 2 Σ_u w_u (1 − w_u) B_u,   B_u = mean of the two − their per-token mixture

(the ensemble keeps every member's drift whole, but gains from mixing runs, which a union does not: B_u is that
gain for two runs of one unit). A member alone (k = 1) is itself in both, and the merge (ensemble) of a unit's
member with its own replicate is predicted as the members' mean. No union is trained: the cost is one more
member per unit (`train-partition UNIT --replicate 1`) and the drift rows' evaluation.
"""

from __future__ import annotations

import numpy as np

from ablate.scoring.proxies.base import stored

# the drift rows' methods in mixture_perplexity (scoring/drift.py writes them, mixture [unit])
REPLICATE, MERGE, ENSEMBLE = "replicate", "replicate-merge", "replicate-ensemble"
METHODS = (REPLICATE, MERGE, ENSEMBLE)


def penalties(index) -> dict[tuple[str, str], tuple[float, float]]:
    """{(unit, eval set): (A, B)} from the drift rows and each unit's own merged row (its member alone)."""
    lp: dict[tuple, dict] = {}
    marks = ", ".join(f"'{m}'" for m in ("merged", *METHODS))
    for r in index.rows("SELECT mixture, eval_set, method, ln(ppl) AS lp FROM mixture_perplexity "
                        f"WHERE len(mixture) = 1 AND method IN ({marks})"):
        lp.setdefault((r["mixture"][0], r["eval_set"]), {})[r["method"]] = r["lp"]
    out = {}
    for key, v in lp.items():
        if all(m in v for m in ("merged", *METHODS)):
            mean = (v["merged"] + v[REPLICATE]) / 2
            out[key] = (2 * (mean - v[MERGE]), mean - v[ENSEMBLE])
    return out


def correction(case, field: str) -> float:
    """Σ_u w_u (1 − w_u) x_u over the case's members (0 for a member alone)."""
    if case.k == 1:
        return 0.0
    values = getattr(case, field)
    if values is None:
        raise ValueError(f"no replicate member for every unit of {'+'.join(case.mixture)} on {case.eval_set}: "
                         f"run `ablate train-partition UNIT --replicate 1`, then score the drift rows")
    w = np.asarray(case.weights, dtype=np.float64)
    return float(np.sum(w * (1 - w) * np.asarray(values)))


class Private:
    fitted = False
    evaluated = False  # predicted from rows other methods write (merged or ensemble, and the drift rows)
    build = None
    needs_replicates = True  # one more member per unit: the protocol prefers a proxy without them on a tie

    def __init__(self, name: str, base: str, field: str, factor: float, summary: str):
        self.name, self.base, self.field, self.factor, self.summary = name, base, field, factor, summary

    def predict(self, cases, known, budget) -> np.ndarray:
        base = stored(cases, self.base, self.base)
        return base + self.factor * np.asarray([correction(c, self.field) for c in cases])


PROXY = Private("private", "merged", "drift", 1.0,
                "merged + the private drift a union keeps and an average shrinks, measured from a replicate member "
                "per unit; no union needed")
ON_ENSEMBLE = Private("private-ensemble", "ensemble", "bonus", 2.0,
                      "ensemble − the gain of mixing two runs of one unit, measured from a replicate member per "
                      "unit; no union needed")
