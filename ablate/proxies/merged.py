"""`merged`: the perplexity of the members' uniform (or weighted) parameter average (Na et al.)."""

from __future__ import annotations

import numpy as np

from ablate.merge import merge_members


class Merged:
    name = "merged"
    fitted = False
    evaluated = True
    summary = "parameter average of the units' members (the paper); no union needed"

    @staticmethod
    def build(pool, seed_id: str, members: list[str], weights: list[float], device=None):
        return merge_members(pool, members, weights, device=device)

    @staticmethod
    def build_into(model, pool, members: list[str], weights: list[float], full_hash: bool = False) -> None:
        """The same weights, streamed straight into the model's parameters (ablate/inplace.py): the
        model and one chunk in memory instead of the model beside a state dict."""
        from ablate.inplace import merge_into

        merge_into(model, pool, members, weights, full_hash)

    def predict(self, cases, known, budget) -> np.ndarray:
        return np.asarray([c.merged for c in cases])


PROXY = Merged()
