"""`regression`: a RegMix-style regressor from mixture composition alone, at the same union budget.

Per eval set, log ppl_truth ≈ β0 + Σ_u β_u · x_u, where x_u is how many epochs of unit u's
data the ground truth trains on (its weight, × k for the k x budget question). Fitted with
scikit-learn's ridge on exactly the unions the calibrated proxy sees, plus the units alone
(free: the union of one unit is its member). RegMix fits LightGBM on hundreds of runs; with
a handful of points only a linear model is identifiable. For the k x budget question the seed
is a free point too (no data added). It tells users whether merging
adds information over plain regression at the same training spend.
"""

from __future__ import annotations

import numpy as np

from ablate.core.errors import UsageError
from ablate.scoring.proxies.base import free_truths

ALPHA = 1e-2


def ridge():
    try:
        from sklearn.linear_model import Ridge
    except ImportError:
        raise UsageError("the regression baseline needs scikit-learn: pip install 'ablate[fit]'") from None
    return Ridge(alpha=ALPHA)


class Regression:
    name = "regression"
    fitted = True
    evaluated = False
    summary = "ridge regression from composition alone (RegMix-style), same unions + units alone"

    def predict(self, cases, known, budget) -> np.ndarray:
        truths = free_truths(cases) | dict(known)
        units = sorted({u for c in cases for u in c.mixture})
        out = np.empty(len(cases))
        for ev in sorted({c.eval_set for c in cases}):
            idx = [i for i, c in enumerate(cases) if c.eval_set == ev]
            train = [cases[i] for i in idx if cases[i].key in truths]
            x = [c.composition(units, budget) for c in train]
            y = [truths[c.key] for c in train]
            seed = cases[idx[0]].seed
            if budget == "sum" and seed is not None:  # no data added is the seed itself: a free point
                x, y = x + [[0.0] * len(units)], y + [seed]
            model = ridge().fit(np.asarray(x), np.asarray(y))
            out[idx] = model.predict(np.asarray([cases[i].composition(units, budget) for i in idx]))
        return out


PROXY = Regression()
