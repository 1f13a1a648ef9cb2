"""`task-sum`: the seed plus the *sum* of the units' task vectors (task arithmetic, Ilharco et al. 2023).

Why, for the add-data question: a union trained on k units for k x the steps applies every
unit's update in full, where an average applies each at 1/k. Summing the task vectors
(member - seed) keeps each unit's full update, so in-domain gains and seed-domain
forgetting both grow with k, as they do in the k x budget union. No fitting, no union.
"""

from __future__ import annotations

import numpy as np

from ablate.scoring.proxies.base import stored
from ablate.scoring.proxies.scaled import extrapolate


class TaskSum:
    name = "task-sum"
    fitted = False
    evaluated = True
    summary = "seed + sum of the units' task vectors (member - seed); no union needed"

    @staticmethod
    def build(pool, seed_id: str, members: list[str], weights: list[float], device=None):
        """seed + k * sum_i w_i (theta_i - seed) = k * mean - (k - 1) * seed, in float32, on `device`."""
        return extrapolate(pool, seed_id, members, weights, len(members), device)

    def predict(self, cases, known, budget) -> np.ndarray:
        return stored(cases, "task_sum", self.name)


PROXY = TaskSum()
