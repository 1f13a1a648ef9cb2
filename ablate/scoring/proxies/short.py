"""`short`: a mixture ranked by its short union, the seed trained on the mixture for a fraction of the budget.

Why: a merge cannot see forgetting (a union keeps a private drift that averaging shrinks: private.py), a real
union can, and the first part of a union's run is where a model moves most. So a union trained on a quarter of
the budget might order the seed's own domains as the full union does, at a quarter of a union per mixture.
Measured on the protocol (FIDELITY.md; `fidelity.short_unions`): it does not. Its log ppl is not on the full
union's scale (it trained less), so only its orderings are scored; a member alone (k = 1) is itself.
"""

from __future__ import annotations

import numpy as np


class Short:
    name = "short"
    fitted = False
    evaluated = False  # predicted from the short unions' own rows (`union`, budget tokens=N)
    build = None
    searchable = False  # its unions are trained by `ablate fidelity` alone (fidelity.short_unions), not per candidate
    summary = ("the mixture's own union trained on a fraction of the budget (fidelity.short_unions); costs that "
               "fraction of a union per mixture ranked")

    def predict(self, cases, known, budget) -> np.ndarray:
        missing = [c for c in cases if c.k > 1 and c.short is None]
        if missing:
            c = missing[0]
            raise ValueError(f"no short union of {'+'.join(c.mixture)} on {c.eval_set}: set fidelity.short_unions")
        return np.asarray([c.merged if c.k == 1 else c.short for c in cases])


PROXY = Short()
