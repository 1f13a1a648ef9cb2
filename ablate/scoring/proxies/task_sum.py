"""`task-sum`: the seed plus the *sum* of the units' task vectors (task arithmetic, Ilharco et al. 2023).

Why, for the add-data question: a union trained on k units for k x the steps applies every
unit's update in full, where an average applies each at 1/k. Summing the task vectors
(member - seed) keeps each unit's full update, so in-domain gains and seed-domain
forgetting both grow with k, as they do in the k x budget union. No fitting, no union.
"""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from ablate.scoring.merge import merge_members


class TaskSum:
    name = "task-sum"
    fitted = False
    evaluated = True
    summary = "seed + sum of the units' task vectors (member - seed); no union needed"

    @staticmethod
    def build(pool, seed_id: str, members: list[str], weights: list[float], device=None):
        """seed + k * sum_i w_i (theta_i - seed) = k * mean - (k - 1) * seed, in float32, on `device`."""
        k = len(members)
        mean = merge_members(pool, members, weights, device=device)
        seed = load_file(str(pool.weights_path(seed_id)))  # host: its tensors go over one at a time
        out = {}
        for name in list(mean):  # pop as we go: the mean and the result never both whole
            t = mean.pop(name)
            if not t.is_floating_point():
                out[name] = t  # integer buffers are not averaged, nor summed
                continue
            # in place, k * t - (k - 1) * s with the same three roundings: no full-size temporaries
            s = seed[name].to(t.device, torch.float32)
            out[name] = t.to(torch.float32).mul_(k).sub_(s.mul_(k - 1)).to(t.dtype)
        return out

    def predict(self, cases, known, budget) -> np.ndarray:
        missing = [c for c in cases if c.task_sum is None]
        if missing:
            c = missing[0]
            raise ValueError(f"task-sum was not evaluated for {'+'.join(c.mixture)} on {c.eval_set}")
        return np.asarray([c.task_sum for c in cases])


PROXY = TaskSum()
