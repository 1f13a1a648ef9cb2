"""`ensemble`: members' predictive distributions mixed per token, p(x) = Σ w_i p_i(x) (ablate/scoring/ensemble.py).

Its rows are computed from each member's cached per-token losses (no model is built, no forward pass
after the cache is filled) and stored under method `ensemble` like any evaluated proxy's.
"""

from __future__ import annotations

import numpy as np

from ablate.scoring.proxies.base import stored


class Ensemble:
    name = "ensemble"
    fitted = False
    evaluated = True
    build = None  # nothing to build: scored from the token-loss cache (scoring/ensemble.score_ensemble)
    summary = "members' next-token probabilities mixed per token (output space); no union, no merge"

    def predict(self, cases, known, budget) -> np.ndarray:
        return stored(cases, "ensemble", self.name)


PROXY = Ensemble()
