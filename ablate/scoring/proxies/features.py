"""`features`: a regression on what the proxies measured (MDE / DeMix style), fitted on a few unions.

    log ppl_truth ≈ a_eval + b_merged · merged + b_ensemble · ensemble

One slope per feature shared by every eval set (a handful of unions is too few for separate fits), a
per-eval-set intercept (which cannot change a ranking), ridge-regularized toward equal slopes of 1/2:
with no union (m = 0) the units alone are the only points and both features equal the member there, so
the fit stays at the prior, the plain average of the two proxies; each trained union moves the slopes
toward whichever feature ranks the truths better. Google's MDE (arXiv 2502.15950) regresses on domain
experts' predictions the same way; DeMix fits LightGBM on merged-model scores, which needs hundreds of
points, not the few unions a user trains. Composition-only regression is `regression`.
"""

from __future__ import annotations

import numpy as np

from ablate.scoring.proxies.base import free_truths

FEATURES = (("merged", lambda c: c.merged), ("ensemble", lambda c: c.ensemble))
RIDGE = 1e-2  # toward the prior slopes: small enough that 3 unions on 8 eval sets move them


def _design(cases, evals: list[str]) -> np.ndarray:
    return np.asarray([[1.0 if c.eval_set == e else 0.0 for e in evals] + [f(c) for _, f in FEATURES]
                       for c in cases])


class Features:
    name = "features"
    fitted = True
    evaluated = False
    # with fewer unions than a fit needs it is its prior, the plain average of the merge and the ensemble: a proxy
    # of its own (the protocol scores it at m = 0), so `search` may rank by it before any union is trained
    usable_without_unions = True
    needs = ("ensemble",)  # the rows it reads besides merged's, scored for every candidate first
    summary = "ridge on merged and ensemble log ppl (per-eval intercepts, shared slopes, prior 1/2 each), on unions"

    def fit(self, cases, known, budget) -> dict:
        truths = free_truths(cases) | dict(known)
        train = [c for c in cases if c.key in truths]
        evals = sorted({c.eval_set for c in cases})
        x, y = _design(train, evals), np.asarray([truths[c.key] for c in train])
        prior = np.r_[np.zeros(len(evals)), np.full(len(FEATURES), 1.0 / len(FEATURES))]
        penalty = np.diag(np.r_[np.full(len(evals), 1e-9), np.full(len(FEATURES), RIDGE * len(train))])
        coef = np.linalg.solve(x.T @ x + penalty, x.T @ y + penalty @ prior)
        return {"evals": evals, "coef": coef}

    def predict(self, cases, known, budget) -> np.ndarray:
        missing = [c for c in cases if c.ensemble is None]
        if missing:
            raise ValueError(f"features needs ensemble rows: none for {'+'.join(missing[0].mixture)} on "
                             f"{missing[0].eval_set}")
        model = self.fit(cases, known, budget)
        return _design(cases, model["evals"]) @ model["coef"]


PROXY = Features()
