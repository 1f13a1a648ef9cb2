"""The output-space counterpart of the merge: members' predictive distributions mixed per token.

How to run:
    ablate fidelity                              # `ensemble` is scored beside `merged` on every study
    ablate sweep --method ensemble               # every mixture of the pool's units, from the cache alone
    from ablate.scoring.ensemble import score_ensemble, subset_nll_sums, weight_gradient

A mixture with weights w scores  p(x_t) = Σ_i w_i p_i(x_t | x_<t)  at every predicted token, p_i being
unit i's member. Only the probability of the token that occurs is needed, so each member is evaluated
once per eval set and its per-token NLL cached (ablate/store/token_nll.py); after that any mixture and
any weights are scored with no forward pass, and the gradient of Σ NLL with respect to w is exact:
    ∂/∂w_i Σ_t -log p(x_t) = -Σ_t p_i(x_t) / p(x_t).
Every sum uses a per-token shift (the best member's NLL) so that exp never underflows: p_i / p_max
lies in (0, 1]. Why this proxy at all (Google's MDE, arXiv 2502.15950, scores mixtures with per-domain
experts' predictions): the merged model is blind where no unit covers the eval set, and the ensemble
reads what each member knows token by token instead of averaging it away in parameter space.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import torch

import ablate.scoring.proxies as proxies
from ablate.core.energy import Meter
from ablate.core.progress import bar
from ablate.models.model import count_params, load_member
from ablate.scoring.evaluate import nll_stats, windows
from ablate.scoring.score import study_row
from ablate.scoring.tasks import evaluate_eval_set, predicted_per_window
from ablate.store import token_nll
from ablate.store.results import attach_cost, existing_rows, row_id, write_rows

METHOD = "ensemble"


def predicted_bytes(tokens: np.ndarray, byte_len: np.ndarray, seq_len: int) -> int:
    return int(sum(int(byte_len[tokens[a + 1:b]].sum()) for a, b in windows(int(tokens.size), seq_len)))


def eval_set_bytes(study, ev: dict) -> int:
    """UTF-8 bytes of the tokens an eval set's rows predict: a task's answers (its sidecar), a text set's windows."""
    if ev.get("task"):
        return int(ev["n_bytes"])
    return predicted_bytes(study.eval_tokens[ev["domain"]], study.byte_len, study.cfg.eval.seq_len)


def member_nll(study, model_id: str, model=None) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """({eval set: per-token NLL}, {eval set: the forward's stats where one ran}) for one member: read from
    the cache, or measured once (every eval set the cache misses) and cached."""
    sha = study.pool.read_meta(model_id)["sha256"]
    seq_len = study.cfg.eval.seq_len
    out, measured = {}, {}
    for ev in study.evals:
        key = token_nll.cache_key(sha, ev, seq_len, study.precision)
        arr = token_nll.read(study.pool, model_id, ev["domain"], key)
        if arr is None:
            if model is None:
                model = load_member(study.pool, model_id, full_hash=study.cfg.verify_hash, device=study.device)
            stats = evaluate_eval_set(model, study, ev, per_token=True)
            arr = stats.pop("token_nll")
            token_nll.write(study.pool, model_id, ev["domain"], key, arr)
            measured[ev["domain"]] = stats | {"flops": 2.0 * count_params(model)[1] * stats["n_tokens"]}
        out[ev["domain"]] = arr
    return out, measured


def mixed_nll(nll: np.ndarray, weights) -> np.ndarray:
    """Per-token NLL of the mixture: -log Σ_i w_i exp(-nll_i), for nll of shape [k, T] (float64 out)."""
    nll = np.asarray(nll, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    best = nll.min(axis=0)
    return best - np.log(w @ np.exp(best - nll))


def weight_gradient(nll: np.ndarray, weights) -> np.ndarray:
    """∂ Σ_t mixed_nll / ∂ w_i = -Σ_t p_i(t) / p(t), exact; for the simplex, project or use mirror descent."""
    nll = np.asarray(nll, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    best = nll.min(axis=0)
    rel = np.exp(best - nll)  # p_i / p_best, in (0, 1]
    return -(rel / (w @ rel)).sum(axis=1)


def segment_sums(per_token: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Flat per-token values [sum(sizes)] -> the sum of each consecutive segment of `sizes` tokens (a window's
    or an example's): a ragged reduceat, where scoring/losses.window_sums sums rectangular [b, t] windows."""
    return np.add.reduceat(per_token, np.concatenate([[0], np.cumsum(sizes)[:-1]]))


def subset_nll_sums(nll: np.ndarray, masks: np.ndarray, chunk: int = 2048, dtype=np.float32) -> np.ndarray:
    """Σ NLL of the uniform ensemble of every subset in `masks` ([M, n] 0/1), from members' NLL [n, T].

    One GEMM per chunk of subsets in probability space (p_i / p_best, shifted per token), so 2^n mixtures
    cost about M·n·T multiply-adds: every mixture of 16 units on a few thousand tokens in seconds. float32
    by default (the shift keeps every value in (0, n]; sums agree with mixed_nll to ~1e-6 relative)."""
    nll = np.asarray(nll, dtype=np.float64)
    best = nll.min(axis=0)
    rel = torch.from_numpy(np.exp(best - nll).astype(dtype))  # [n, T]
    masks = np.asarray(masks, dtype=dtype)
    counts = masks.sum(axis=1)
    out = np.empty(len(masks), dtype=np.float64)
    base = float(best.sum())
    for a in range(0, len(masks), chunk):
        m = torch.from_numpy(masks[a:a + chunk])
        mix = (m @ rel).log_().sum(dim=1).double().numpy()  # Σ_t log Σ_{i∈S} p_i/p_best
        out[a:a + chunk] = base - mix + rel.size(1) * np.log(counts[a:a + chunk])
    return out


def all_masks(n: int, min_k: int = 1) -> np.ndarray:
    """Every subset of n units with at least min_k members, as 0/1 rows (2^n - 1 for min_k = 1)."""
    rows = [c for k in range(min_k, n + 1) for c in itertools.combinations(range(n), k)]
    masks = np.zeros((len(rows), n), dtype=np.float32)
    for r, c in enumerate(rows):
        masks[r, list(c)] = 1.0
    return masks


def score_ensemble(study, mixtures: list[tuple[list[str], list[float]]], force: bool = False,
                   label: str = "ensemble") -> dict[tuple, str]:
    """`ensemble` rows for every (mixture, weights) on every eval set, from the members' cached per-token
    losses (measured once where the cache misses); written like any evaluated proxy's rows.
    Returns {(mixture, weights): model id}."""
    cfg, pool = study.cfg, study.pool
    done = set() if force else existing_rows(pool, study.precision)
    seq_len = cfg.eval.seq_len
    sizes = {ev["domain"]: predicted_per_window(ev, seq_len) for ev in study.evals}
    n_bytes = {ev["domain"]: eval_set_bytes(study, ev) for ev in study.evals}
    ids, rows, cache = {}, [], {}
    with Meter(cfg.energy) as meter, bar(label, len(mixtures)) as update:
        for mix, weights in mixtures:
            members = [study.unit_member(u) for u in mix]
            mid = ids[(tuple(mix), tuple(weights))] = proxies.model_id(METHOD, members, weights)
            todo = [ev for ev in study.evals if force or row_id(METHOD, mid, ev, seq_len) not in done]
            for m in members:
                if todo and m not in cache:
                    cache[m] = member_nll(study, m)
            for ev in todo:
                d = ev["domain"]
                t0 = time.perf_counter()
                per_token = mixed_nll(np.stack([cache[m][0][d] for m in members]), weights)
                stats = nll_stats(float(per_token.sum()), int(per_token.size), n_bytes[d],
                                  time.perf_counter() - t0, segment_sums(per_token, sizes[d]))
                forward = cache[members[0]][1].get(d) if len(members) == 1 else None
                if forward:  # a member alone: this row is the forward pass that filled the cache
                    stats["eval_s"] = forward["eval_s"]
                rows.append(_row(study, ev, stats, mix, weights, mid, forward["flops"] if forward else 0.0))
            update(1)
    attach_cost(rows, meter.result)
    write_rows(pool, rows)
    return ids


def _row(study, ev, stats, mix, weights, mid, flops):
    row = study_row(study, ev, stats, method=METHOD, mixture=list(mix), weights=list(weights), model_id=mid,
                    n_nonembed=0, device=study.device)
    row["flops"] = flops  # the member's forward where this row ran it; mixing cached losses costs no FLOPs
    return row
