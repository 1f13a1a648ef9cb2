"""The per-token loss and its sums: the one place evaluation, the batched evaluator and the weight optimizer
turn logits into NLL.

How to run (from Python):
    from ablate.scoring.losses import token_nll, total_nll, window_sums
    tok = token_nll(logits, target)       # [..., V] logits, [...] target ids -> [...] float32 NLL per token
    window_sums(tok)                      # [b, t] -> [b] float64: float64 sums of the float32 losses
    window_sums(tok, wide=False)          # [b] float32 sums, widened (the batched evaluator's stored recipe)
    total_nll(tok)                        # float32 Σ with the bits of cross_entropy(..., reduction="sum")

Why one owner: the three callers used to write log_softmax + nll_loss, a chunked cross_entropy and a
cross_entropy with backward, each its own way; their stored values (pool rows, the optimizer's held
windows) depend on two summation recipes, so both are named here instead of hidden in each copy.

Exactness (tests/scoring/test_losses.py): log-softmax is row-wise, so taking it over token chunks gives
every token the float32 loss one call over all tokens gives (cross_entropy's, too: it is log_softmax then
nll_loss, a pick). `total_nll` runs nll_loss's reduction="sum" over an [N, 1] column of those losses:
nll_loss adds the picked values in the same order whatever the vocabulary, so the total keeps the bits of
cross_entropy(logits, target, reduction="sum"). Speed: a chunk of CHUNK_LOGITS floats (4 MB) stays in
cache, where one log-softmax over the whole [tokens, vocab] logits streams them through memory twice
(at SmolLM2's 49k vocab a batch of 32 x 127 tokens is 800 MB of logits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHUNK_LOGITS = 1 << 20  # floats per log-softmax chunk on CPU: 256 tokens of a 4096 vocab, 21 of a 49k one
# On a GPU the cost is kernel launches, not cache: chunks of 1 GB of float32 logits only bound the float32 copy
# of bf16 logits (a 49k vocab: 5.5k tokens a chunk). Row-wise again, so the bits do not depend on it either.
GPU_CHUNK_LOGITS = 1 << 28


def token_nll(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
              chunk_logits: int | None = None) -> torch.Tensor:
    """Each target token's NLL (float32, target's shape) from logits [..., V], log-softmax in token chunks.

    `mask` (target's shape, bool): tokens to count; the others' losses are 0 (exact in every sum).
    Differentiable: the chunks are a split, whose backward is one concatenation."""
    flat = logits.reshape(-1, logits.size(-1))
    picks = target.reshape(-1, 1)
    limit = chunk_logits or (CHUNK_LOGITS if flat.device.type == "cpu" else GPU_CHUNK_LOGITS)
    step = max(1, limit // max(1, flat.size(1)))
    parts = [-F.log_softmax(x.float(), -1).gather(1, t).squeeze(1)
             for x, t in zip(flat.split(step), picks.split(step))]
    nll = (parts[0] if len(parts) == 1 else torch.cat(parts)).view(target.shape)
    return nll if mask is None else nll.masked_fill(~mask, 0.0)


def total_nll(tok: torch.Tensor) -> torch.Tensor:
    """Σ of per-token losses in float32, added as cross_entropy(..., reduction="sum") adds them (its bits)."""
    column = tok.reshape(-1, 1)
    return F.nll_loss(-column, torch.zeros(column.size(0), dtype=torch.long, device=tok.device), reduction="sum")


def window_sums(tok: torch.Tensor, wide: bool = True) -> torch.Tensor:
    """[..., t] per-token losses -> [...] float64 window sums. `wide`: summed in float64 (evaluate_tokens'
    recipe); else summed in float32 and widened (the batched evaluator's and the optimizer's held windows).
    The two part in the last bits, and each one's stored values are its own."""
    return tok.double().sum(-1) if wide else tok.sum(-1).double()
