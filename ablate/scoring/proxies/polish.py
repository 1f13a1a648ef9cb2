"""`polish`: a mixture ranked by its polished merge, the merge of its members trained further on the mixture for a
fraction of a union's steps.

Why: a merge cannot see forgetting (what a union does to the seed's own domains lies outside its members' span:
docs/fidelity.md), a real union can; a short union from the seed sees it but pays again for what the members
already learned. Starting from the merge (train.start = merge, budgets.polish_config) keeps the members' shared
part and trains only what the mixture itself adds. Measured on the protocol's six seed-known sets
(bench/merge_polish.py, docs/fidelity.md): a quarter of a union in each of two data orders, their log ppl averaged
(fidelity.polish_orders: 2, half a union per mixture as a short union), picked within 0.5 % of the best in every
pair of three data orders (short unions: up to 3.1 %; the merge: 3.1 %) but ranked no better (median Spearman 0.82
to 0.90 against 0.87 to 0.93); one order alone strayed to 4.8 % in one order of three. On the real SmolLM2-135M
seed's `quotes` it failed (Spearman -0.19, regret 5.1 %; short unions 0.40, 0.6 %). Its log ppl is not on the
full union's scale (it trained on fewer tokens), so only its orderings are scored; a member alone (k = 1) is
itself.
"""

from __future__ import annotations

import numpy as np

from ablate.scoring.proxies.base import own_runs


class Polish:
    name = "polish"
    fitted = False
    evaluated = False  # predicted from the polished merges' own rows (`union`, budget tokens=N, start merge)
    build = None
    searchable = False  # its runs are trained by `ablate fidelity` alone (fidelity.polish_unions), not per candidate
    trains = "polish_unions"  # the fidelity setting it trains by

    @staticmethod
    def per_mixture(fidelity) -> float:
        """Unit trainings per mixture ranked: its fraction of a union in each data order."""
        return fidelity.polish_unions * fidelity.polish_orders
    summary = ("the mixture's merge trained further on the mixture for a fraction of a union's steps "
               "(fidelity.polish_unions); costs that fraction of a union per mixture ranked")

    def predict(self, cases, known, budget) -> np.ndarray:
        return own_runs(cases, "polish", "polished merge", self.trains)


PROXY = Polish()
