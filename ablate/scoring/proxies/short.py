"""`short`: a mixture ranked by its short union, the seed trained on the mixture on a fraction of the tokens.

Why: a merge cannot see forgetting (what a union does to the seed's own domains lies outside its members' span:
docs/fidelity.md), a real union can. A short union keeps a full union's steps and learning-rate schedule on a
smaller batch (budgets.short_config): forgetting follows the steps a run takes, not the tokens it sees. Measured on
the protocol's seed-known sets at half the tokens: the full steps on half the batch ranked them at median Spearman
0.90 (0.87 with another data order; the merge 0.83), half the steps on the full batch at 0.80, and a quarter of
the batch broke (bench/short_unions.py). Its log ppl is not on the full union's scale (it saw fewer tokens), so
only its orderings are scored; a member alone (k = 1) is itself.
"""

from __future__ import annotations

import numpy as np

from ablate.scoring.proxies.base import own_runs


class Short:
    name = "short"
    fitted = False
    evaluated = False  # predicted from the short unions' own rows (`union`, budget tokens=N)
    build = None
    searchable = False  # its unions are trained by `ablate fidelity` alone (fidelity.short_unions), not per candidate
    trains = "short_unions"  # the fidelity setting it trains by

    @staticmethod
    def per_mixture(fidelity) -> float:
        """Unit trainings per mixture ranked: its fraction of a union."""
        return fidelity.short_unions
    summary = ("the mixture's own union on a fraction of the tokens: a full union's steps on a smaller batch "
               "(fidelity.short_unions); costs that fraction of a union per mixture ranked")

    def predict(self, cases, known, budget) -> np.ndarray:
        return own_runs(cases, "short", "short union", self.trains)


PROXY = Short()
