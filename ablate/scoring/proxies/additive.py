"""`additive`: each unit's effect on the eval set, measured alone, added up in log perplexity.

    log ppl(S) ≈ log ppl_seed + Σ_u x_u · (log ppl_u − log ppl_seed)

x_u is how many epochs of unit u's data the ground truth trains on: 1 per unit for the
k x budget question (every unit's data in full), its weight for the equal-compute one
(where this is the mean of the members' log perplexities). Why, for the add-data question:
a union that trains on every unit in full gets every unit's own improvement (and forgetting)
at once, which an average dilutes to 1/k. The seed and the units alone are already
evaluated, so this costs nothing: no model built, no union trained. It ignores how units
interact; the fitted proxies can learn that from a few unions.
"""

from __future__ import annotations

import numpy as np


class Additive:
    name = "additive"
    fitted = False
    evaluated = False
    summary = "seed + the sum of each unit's own effect (member alone vs seed) in log ppl; no union, no model"

    def predict(self, cases, known, budget) -> np.ndarray:
        out = []
        for c in cases:
            if c.seed is None:
                raise ValueError(f"additive needs the seed's perplexity on {c.eval_set} (run score-mixture or sweep)")
            scale = c.k if budget == "sum" else 1.0
            out.append(c.seed + sum(w * scale * (m - c.seed) for w, m in zip(c.weights, c.members)))
        return np.asarray(out)


PROXY = Additive()
