"""`calibrated`: the merged proxy corrected for mixture size, fitted per question on a few unions.

Why: a k x budget union trains k x longer while a merge dilutes each unit by 1/k, and the
size effect has a different sign on the eval set's own domain (more steps help), on the
seed's domains (more steps forget) and on domains nobody trained on. So, per ground truth
and pooled over eval sets (a handful of unions is too few for separate fits):

    log ppl_truth - log ppl_merged ≈ a_eval + c_relation · log k_eff     relation ∈ own | seed | other

Single units are free points (the union of one unit is its member: residual 0 at log k = 0).
The per-eval-set intercept cannot change a ranking; only the size slopes can. They are
kept only when they predict the unions it was fitted on better than intercepts alone,
leave-one-union-out; otherwise the ranking is the raw merged one. So with no unions, or
unions that do not support a size effect, `calibrated` ranks exactly as `merged`.

`calibrated-ensemble` is the same correction on top of the ensemble (members' next-token probabilities
mixed per token) instead of the merge: the ensemble reads eval-only targets better than the merge but
has its own size bias (a per-token mixture of k fully trained members is not one model trained on 1/k
of each), which the same three slopes can absorb where the unions support it.
"""

from __future__ import annotations

import math

import numpy as np

from ablate.scoring.proxies.base import free_truths

RELATIONS = ("own", "seed", "other")
RIDGE = 1e-3


def _design(cases, evals: list[str], with_size: bool) -> np.ndarray:
    rows = []
    for c in cases:
        row = [1.0 if c.eval_set == e else 0.0 for e in evals]
        if with_size:
            row += [math.log(c.k_eff) if c.relation == rel else 0.0 for rel in RELATIONS]
        rows.append(row)
    return np.asarray(rows)


def _fit(cases, y: np.ndarray, evals: list[str], with_size: bool) -> np.ndarray:
    x = _design(cases, evals, with_size)
    # a light ridge keeps the solve stable when a relation never occurs among the unions
    return np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ y)


def _loo_error(train, y, evals, with_size: bool, unions: list[tuple]) -> float:
    """Mean squared error predicting each union (all its eval sets) from the others."""
    err = []
    for mix in unions:
        keep = [i for i, c in enumerate(train) if (c.mixture, c.weights) != mix]
        out = [i for i, c in enumerate(train) if (c.mixture, c.weights) == mix]
        coef = _fit([train[i] for i in keep], y[keep], evals, with_size)
        pred = _design([train[i] for i in out], evals, with_size) @ coef
        err += list((pred - y[out]) ** 2)
    return float(np.mean(err))


class Calibrated:
    fitted = True
    evaluated = False

    def __init__(self, name: str, base: str):
        self.name, self.base = name, base  # base: the Case field corrected (merged, ensemble)
        self.summary = (f"{base} + per-eval intercept + size slopes for own / seed / other domains, fitted per "
                        "question; slopes kept only if they win leave-one-union-out")

    def _base(self, cases) -> np.ndarray:
        values = [getattr(c, self.base) for c in cases]
        if any(v is None for v in values):
            c = cases[values.index(None)]
            raise ValueError(f"{self.name} needs {self.base} rows: none for {'+'.join(c.mixture)} on {c.eval_set}")
        return np.asarray(values, dtype=float)

    def fit(self, cases, known, budget) -> dict:
        truths = free_truths(cases) | dict(known)
        train = [c for c in cases if c.key in truths]
        evals = sorted({c.eval_set for c in cases})
        y = np.asarray([truths[c.key] for c in train]) - self._base(train)
        unions = sorted({(c.mixture, c.weights) for c in train if c.k > 1})
        with_size = False
        if len(unions) >= 3:  # leave-one-out needs at least two unions to fit on
            with_size = _loo_error(train, y, evals, True, unions) < _loo_error(train, y, evals, False, unions)
        coef = _fit(train, y, evals, with_size) if len(train) else np.zeros(len(evals))
        return {"evals": evals, "with_size": with_size, "coef": coef, "unions": len(unions)}

    def predict(self, cases, known, budget) -> np.ndarray:
        model = self.fit(cases, known, budget)
        x = _design(cases, model["evals"], model["with_size"])
        return self._base(cases) + x @ model["coef"]

    @staticmethod
    def describe(model: dict) -> str:
        names = [f"a[{e}]" for e in model["evals"]] + ([f"c[{r}]" for r in RELATIONS] if model["with_size"] else [])
        return ", ".join(f"{n}={v:+.4f}" for n, v in zip(names, model["coef"]))


PROXY = Calibrated("calibrated", "merged")
ON_ENSEMBLE = Calibrated("calibrated-ensemble", "ensemble")
