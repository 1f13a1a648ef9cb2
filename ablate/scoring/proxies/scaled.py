"""`scaled`: task vectors scaled by a factor fitted on a few unions, between the average and the task sum.

    θ = θ_seed + α(k) · Σ_i w_i (θ_i − θ_seed),   α(k) = 1 + β (k − 1)

β = 0 is the paper's average (`merged`), β = 1 the task sum (`task-sum`, α = k); a member alone (k = 1)
is itself for every β, so the units stay free truths. The merge dilutes each unit's update by 1/k while
a union applies it in full; how much of that dilution the truth undoes depends on the study and the
question, so β is chosen on the m calibration unions (MergeMix tunes merge coefficients against targets
the same way, arXiv 2601.17858): among the evaluated grid (0, BETAS, 1), the β whose predictions, after
a per-eval-set intercept, fit the known unions best. With no union it is 0: `scaled` ranks as `merged`.
The grid's rows are evaluated models (method `scaled@β`), scored like `task-sum`'s.
"""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from ablate.scoring.merge import merge_members

BETAS = (0.25, 0.5, 0.75)  # evaluated beside merged (0) and task-sum (1)


def alpha(beta: float, k: int) -> float:
    return 1.0 + beta * (k - 1)


def extrapolate(pool, seed_id: str, members: list[str], weights: list[float], factor: float, device=None):
    """seed + factor * (mean - seed) = factor * mean - (factor - 1) * seed, in float32, on `device`."""
    mean = merge_members(pool, members, weights, device=device)
    seed = load_file(str(pool.weights_path(seed_id)))  # host: its tensors go over one at a time
    out = {}
    for name in list(mean):  # pop as we go: the mean and the result never both whole
        t = mean.pop(name)
        if not t.is_floating_point():
            out[name] = t  # integer buffers are not averaged, nor scaled
            continue
        # in place, with the same three roundings as task-sum's k * t - (k - 1) * s: no full-size temporaries
        s = seed[name].to(t.device, torch.float32)
        out[name] = t.to(torch.float32).mul_(factor).sub_(s.mul_(factor - 1)).to(t.dtype)
    return out


def builder(beta: float):
    """The build function of the `scaled@beta` rows (score.score_built_models' interface)."""
    def build(pool, seed_id: str, members: list[str], weights: list[float], device=None):
        return extrapolate(pool, seed_id, members, weights, alpha(beta, len(members)), device)
    return build


def method(beta: float) -> str:
    return f"scaled@{beta:g}"


def at(case, beta: float) -> float | None:
    """The case's log ppl under β, from the rows that exist (None where that β was not evaluated)."""
    if beta == 0.0 or case.k == 1:
        return case.merged
    if beta == 1.0:
        return case.task_sum
    return (case.scaled or {}).get(beta)


def fit_beta(cases, known: dict) -> float:
    """The β of the grid with the least squared error on the known unions after a per-eval-set intercept."""
    truths = dict(known)
    train = [c for c in cases if c.key in truths and c.k > 1]
    best, best_err = 0.0, np.inf
    for beta in (0.0, *BETAS, 1.0):
        if not train or any(at(c, beta) is None for c in cases):  # a β must predict every case, not only fit
            continue
        resid: dict[str, list[float]] = {}
        for c in train:
            resid.setdefault(c.eval_set, []).append(truths[c.key] - at(c, beta))
        err = sum(float(np.sum((np.asarray(r) - np.mean(r)) ** 2)) for r in resid.values())
        if err < best_err - 1e-12:
            best, best_err = beta, err
    return best


class Scaled:
    name = "scaled"
    fitted = True
    # its grid's rows (scaled@β) are evaluated models that `ablate fidelity` writes; the proxy itself reads rows
    # (falling back to β = 0, merged, where the grid was not evaluated), so commands treat it as fitted
    evaluated = False
    summary = "seed + α(k)·Σ w_i τ_i, α = 1 + β(k−1), β from merged (0) to task-sum (1) fitted on the unions"

    def predict(self, cases, known, budget) -> np.ndarray:
        beta = fit_beta(cases, known)
        return np.asarray([at(c, beta) for c in cases])


PROXY = Scaled()
