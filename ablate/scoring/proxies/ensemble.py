"""`ensemble`: members' predictive distributions mixed per token, p(x) = Σ w_i p_i(x) (ablate/scoring/ensemble.py).

Its rows are computed from each member's cached per-token losses (no model is built, no forward pass
after the cache is filled) and stored under method `ensemble` like any evaluated proxy's.
"""

from __future__ import annotations

import numpy as np


class Ensemble:
    name = "ensemble"
    fitted = False
    evaluated = True
    build = None  # nothing to build: scored from the token-loss cache (scoring/ensemble.score_ensemble)
    summary = "members' next-token probabilities mixed per token (output space); no union, no merge"

    def predict(self, cases, known, budget) -> np.ndarray:
        missing = [c for c in cases if c.ensemble is None]
        if missing:
            c = missing[0]
            raise ValueError(f"ensemble was not scored for {'+'.join(c.mixture)} on {c.eval_set}")
        return np.asarray([c.ensemble for c in cases])


PROXY = Ensemble()
