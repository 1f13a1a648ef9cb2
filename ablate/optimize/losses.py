"""The losses mixture weights are optimized on: an eval set's loss (its backward gives exact gradients with
respect to the weights, through the merge) and its per-window losses.

How to run (from Python; `ablate optimize` drives it):
    space = MemberSpace.of_members(pool, member_ids, model)   # scoring.inplace: the members as one [n, P] matrix
    space.load([0.5, 0.25, 0.25])                    # theta(w) = sum_i w_i theta_i, written into the model
    nll, n_pred = set_nll(model, windows, batch_size, grad=True)   # one eval set's fit windows, backward done
    slopes = space.project()                         # dL/dw_i = <grad_theta L, theta_i> for every member

The merged model's parameters are linear in the weights, so one backward pass gives the derivative of
an eval loss with respect to every unit's weight (docs/optimize.md "How the weights are found"). The merged model is
scoring's (scoring/inplace.py, MemberSpace); this module holds the losses taken through it.
"""

from __future__ import annotations

import numpy as np
import torch

from ablate.scoring.losses import token_nll, total_nll, window_sums


def set_nll(model: torch.nn.Module, windows: torch.Tensor, batch_size: int, grad: bool,
            mask: torch.Tensor | None = None) -> tuple[float, int]:
    """Sum of NLL over full windows [m, T] and the tokens predicted; with `grad`, the backward of the
    mean NLL (log perplexity) is accumulated into the model's .grad, in eval mode (no dropout).
    `mask` ([m, T-1] 0/1, a task's: ablate/data/tasks.py): only those positions' tokens count (the answer's)."""
    # scoring/losses' token loss (chunked log-softmax, differentiable), summed as cross_entropy(..., "sum")
    # sums it: float32 per batch, what the stored fit values were computed with (their bits).
    model.eval()
    n_pred = windows.size(0) * (windows.size(1) - 1) if mask is None else int(mask.sum())
    total = 0.0
    device = next(model.parameters()).device
    for i in range(0, windows.size(0), batch_size):
        ids = windows[i:i + batch_size].to(device)
        with torch.set_grad_enabled(grad):
            part = None if mask is None else mask[i:i + batch_size].to(device).bool()  # a task: the answer's tokens
            nll = total_nll(token_nll(model(input_ids=ids).logits[:, :-1], ids[:, 1:], mask=part))
            if grad:
                (nll / n_pred).backward()
        total += float(nll.detach())
    return total, n_pred


def window_nll(model: torch.nn.Module, windows: torch.Tensor, batch_size: int,
               mask: torch.Tensor | None = None) -> np.ndarray:
    """Per-window NLL sums (float64) without gradients: the held part's paired comparisons (`mask`: set_nll's)."""
    # Summed per window in float32, then widened: the batched evaluator's recipe (scoring/batched.py), not
    # evaluate_tokens' (float64 sums of float32 tokens); the two part in the last bits, and the stored held
    # values are these (scoring/losses.window_sums names both).
    model.eval()
    out = []
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, windows.size(0), batch_size):
            ids = windows[i:i + batch_size].to(device)
            part = None if mask is None else mask[i:i + batch_size].to(device).bool()
            tok = token_nll(model(input_ids=ids).logits[:, :-1], ids[:, 1:], mask=part)
            out.append(window_sums(tok, wide=False).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
