"""`own-additive`: `additive` where the mixture holds the eval set's own domain, `merged` elsewhere.

Why, for the add-data question: a k x budget union trains on its own-domain unit in full, so on
that domain every unit's measured effect counts at full strength (`additive`); on other
domains the units' effects overlap (they mostly teach the same general language), and summing
them overshoots, while the average does not (`merged`). No model built, no union trained.
Chosen after looking at two studies (literary-code, reference-works); the third (six-units)
is its out-of-sample check in FIDELITY.md.
"""

from __future__ import annotations

import numpy as np

# the submodule itself, not the package: the package's registry imports this module
from ablate.scoring.proxies.additive import PROXY as ADDITIVE


class OwnAdditive:
    name = "own-additive"
    fitted = False
    evaluated = False
    summary = "additive on mixtures holding the eval set's own domain, merged elsewhere; no union, no model"

    def predict(self, cases, known, budget) -> np.ndarray:
        add = ADDITIVE.predict(cases, known, budget)
        return np.asarray([a if c.relation == "own" else c.merged for c, a in zip(cases, add)])


PROXY = OwnAdditive()
