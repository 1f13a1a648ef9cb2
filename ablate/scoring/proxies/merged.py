"""`merged`: the perplexity of the members' uniform (or weighted) parameter average (Na et al.)."""

from __future__ import annotations

import numpy as np

from ablate.scoring.merge import merge_members


class Merged:
    name = "merged"
    fitted = False
    evaluated = True
    summary = "parameter average of the units' members (the paper); no union needed"

    @staticmethod
    def build(pool, seed_id: str, members: list[str], weights: list[float], device=None):
        """As a state dict; scoring streams the same weights into the model instead (inplace.merged_model)."""
        return merge_members(pool, members, weights, device=device)

    def predict(self, cases, known, budget) -> np.ndarray:
        return np.asarray([c.merged for c in cases])


PROXY = Merged()
