"""Perplexity and bits per byte over an eval set's token stream.

How to run (from Python):
    from ablate.scoring.evaluate import evaluate_tokens
    stats = evaluate_tokens(model, tokens, byte_lengths, seq_len=128, batch_size=32)

The eval stream is cut into non-overlapping windows of `seq_len` tokens (the last
one may be shorter). In each window every token but the first is predicted from
the ones before it. We return the raw sums, so aggregates can be recomputed:
    ppl = exp(Σ NLL / Σ predicted tokens)            (not a mean of window perplexities)
    bits_per_byte = Σ NLL / ln 2 / Σ UTF-8 bytes of the predicted tokens
Bytes per token come from the tokenizer (`units.token_byte_lengths`), so bits per
byte compare across tokenizers.
"""

from __future__ import annotations

import inspect
import math
import time

import numpy as np
import torch

from ablate.core.errors import UsageError
from ablate.models.device import eval_precision, precision_context
from ablate.scoring.losses import token_nll, total_nll, window_sums


def windows(n_tokens: int, seq_len: int) -> list[tuple[int, int]]:
    """(start, end) of non-overlapping windows; a last window needs ≥ 2 tokens to predict one."""
    spans = [(s, min(s + seq_len, n_tokens)) for s in range(0, n_tokens, seq_len)]
    return [(a, b) for a, b in spans if b - a >= 2]


def batches(tokens: np.ndarray, spans: list[tuple[int, int]], batch_size: int):
    """The windows as [b, T] arrays: full ones `batch_size` at a time, then the shorter tail window alone."""
    full = [s for s in spans if s[1] - s[0] == spans[0][1] - spans[0][0]]
    rest = [s for s in spans if s not in full]
    for i in range(0, len(full), batch_size):
        chunk = full[i:i + batch_size]
        yield np.stack([tokens[a:b] for a, b in chunk])
    for a, b in rest:  # the shorter tail window runs alone
        yield tokens[a:b][None, :]


@torch.inference_mode()
def evaluate_tokens(model, tokens: np.ndarray, byte_lengths: np.ndarray, *, seq_len: int,
                    batch_size: int, name: str = "eval set", precision: str | None = None,
                    per_token: bool = False) -> dict:
    """Σ NLL, predicted tokens and their bytes over the windows; plus ppl and bits per byte.

    On CUDA `precision` picks bf16 autocast (the default) or exact fp32; the CPU is always fp32.
    `per_token`: also every predicted token's NLL (float32, window order) as stats["token_nll"], the
    `ensemble` proxy's cache (ablate/scoring/ensemble.py)."""
    if tokens.size < seq_len:
        raise UsageError(f"{name} has {tokens.size} tokens, shorter than one eval window ({seq_len})")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    nll = torch.zeros((), dtype=torch.float64, device=device)
    per_window = []  # [b] float64 NLL sums per window, in window order: what a paired bootstrap resamples
    per_tok = []  # [b, T-1] float32 NLL per predicted token (per_token only)
    n_pred, n_bytes = 0, 0
    spans = windows(int(tokens.size), seq_len)
    autocast = precision_context(device, eval_precision(device, precision))
    # Ask only for the logits that predict a token (all positions but the last): the LM head
    # skips one position per window and the logits come back contiguous, so flattening them
    # for the loss is a view, not a copy of the whole [batch, seq, vocab] tensor (64 MB at the
    # demo's 32 x 128 x 4096; ~15% of eval time on CPU). Bit-identical sums on CPU; a model
    # whose forward lacks `logits_to_keep` takes the plain path.
    keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    predicting: dict[int, torch.Tensor] = {}  # window length -> positions 0..T-2 (two lengths at most)
    for batch in batches(tokens, spans, batch_size):
        ids = torch.from_numpy(batch.astype(np.int64)).to(device, non_blocking=True)
        width = ids.size(1)
        with autocast:
            logits = None
            if keep:
                if width not in predicting:
                    predicting[width] = torch.arange(width - 1, device=device)
                logits = model(input_ids=ids, logits_to_keep=predicting[width]).logits
                if logits.size(1) != width - 1:  # a model that reads logits_to_keep otherwise
                    keep, logits = False, None
            if logits is None:
                logits = model(input_ids=ids).logits[:, :-1]
        target = ids[:, 1:]
        # each token's loss once (ablate/scoring/losses.py: chunked log-softmax, the bits of cross_entropy's),
        # then the batch's Σ and the per-window sums a ranking's bootstrap resamples
        tok = token_nll(logits, target)
        nll += total_nll(tok).double()
        per_window.append(window_sums(tok))
        if per_token:
            per_tok.append(tok.reshape(-1))
        n_pred += target.numel()
        n_bytes += int(byte_lengths[batch[:, 1:]].sum())
    total, window_nll = float(nll), torch.cat(per_window).cpu().numpy()  # one sync at the end, not per batch
    model.train(was_training)
    stats = nll_stats(total, n_pred, n_bytes, time.perf_counter() - t0, window_nll)
    if per_token:
        stats["token_nll"] = torch.cat(per_tok).float().cpu().numpy()
    return stats


def nll_stats(total: float, n_pred: int, n_bytes: int, eval_s: float, window_nll=None) -> dict:
    """An evaluation's dict (every row's perplexity numbers) from its Σ NLL, predicted tokens and bytes;
    `window_nll` (each window's NLL sum, in window order) rides along for the rankings' bootstrap."""
    out = {"nll_sum": total, "n_tokens": n_pred, "n_bytes": n_bytes, "ppl": math.exp(total / n_pred),
           "bits_per_byte": total / math.log(2) / max(1, n_bytes), "eval_s": eval_s}
    if window_nll is not None:
        out["window_nll"] = [float(x) for x in window_nll]
    return out
