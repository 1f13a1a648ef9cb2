"""Weights on the simplex with a repetition cap: the caps, the mirror-descent step, the sparsity floor.

How to run (from Python; `ablate optimize` uses these):
    caps = repetition_caps(unit_tokens, budget_tokens=65536, max_epochs=4)   # w_i <= 4 passes over unit i
    w = mirror_step(w, slopes, lr=1.0, caps=caps)                              # exponentiated gradient
    w = sparsify(w, floor=0.02, caps=caps)                                     # drop the dust, renormalize

A weight times the training budget is the tokens a unit gives; more than `max_epochs` passes over
its data is repetition the proxy never saw (Olmix caps each source at a few epochs), so w_i <= c_i with
c_i = max_epochs x unit tokens / budget. Exponentiated gradient (mirror descent under KL) keeps w on
the simplex; the caps are kept by the KL projection onto the capped simplex (clip the capped units at
their cap, rescale the rest, repeat).
"""

from __future__ import annotations

import numpy as np

from ablate.core.errors import UsageError


def repetition_caps(unit_tokens: list[int], budget_tokens: int, max_epochs: float) -> np.ndarray:
    """c_i = max_epochs x tokens_i / budget (>= 1 means no cap); refuses a budget the data cannot fill."""
    if max_epochs <= 0:
        raise UsageError(f"--max-epochs must be > 0 (got {max_epochs:g})")
    if budget_tokens <= 0:
        raise UsageError(f"the training budget must be > 0 tokens (got {budget_tokens})")
    caps = max_epochs * np.asarray(unit_tokens, dtype=np.float64) / budget_tokens
    if caps.sum() < 1 - 1e-9:
        raise UsageError(f"a budget of {budget_tokens:,} tokens needs more than --max-epochs {max_epochs:g} passes "
                         f"over these units' {int(sum(unit_tokens)):,} tokens: raise --max-epochs, lower --tokens "
                         f"or add units")
    return caps


def project(w: np.ndarray, caps: np.ndarray | None) -> np.ndarray:
    """The KL projection of a positive w onto {sum w = 1, 0 <= w <= caps}."""
    w = np.asarray(w, dtype=np.float64) / np.sum(w)
    if caps is None:
        return w
    fixed = np.zeros(w.size, dtype=bool)
    for _ in range(w.size + 1):
        free = ~fixed
        scale = (1 - caps[fixed].sum()) / w[free].sum() if w[free].sum() > 0 else 0.0
        out = np.where(fixed, caps, w * scale)
        over = free & (out > caps + 1e-12)
        if not over.any():
            return out
        fixed |= over
    return np.minimum(out, caps)


def mirror_step(w: np.ndarray, slopes: np.ndarray, lr: float, caps: np.ndarray | None) -> np.ndarray:
    """One normalized exponentiated-gradient step: w_i <- w_i exp(-lr (g_i - mean g) / max|g - mean g|),
    projected. Normalized, so no log-weight moves more than `lr` per step whatever the gradients' scale
    (which grows with how far the members moved from their seed, a property of the study, not of the
    answer); the shift by the mean cancels in the normalization."""
    g = np.asarray(slopes, dtype=np.float64)
    g = g - g.mean()
    scale = np.abs(g).max()
    if scale == 0 or not np.isfinite(scale):
        return project(w, caps)
    z = np.log(np.maximum(w, 1e-300)) - lr * g / scale
    return project(np.exp(z - z.max()), caps)


def sparsify(w: np.ndarray, floor: float, caps: np.ndarray | None) -> np.ndarray:
    """Weights below `floor` set to 0 and the rest renormalized (within the caps). If the caps cannot be
    met on what is left, the smallest dropped units come back until they can."""
    w = np.asarray(w, dtype=np.float64)
    keep = w >= floor
    if not keep.any():
        keep[np.argmax(w)] = True
    order = np.argsort(-w)
    while caps is not None and caps[keep].sum() < 1 - 1e-9:
        keep[next(i for i in order if not keep[i])] = True
    return project(np.where(keep, w, 0.0), None if caps is None else np.where(keep, caps, 0.0))


def kl(w: np.ndarray, prior: np.ndarray) -> float:
    mask = w > 0
    return float(np.sum(w[mask] * np.log(w[mask] / prior[mask])))
