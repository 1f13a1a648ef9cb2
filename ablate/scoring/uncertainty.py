"""How sure a ranking is: a paired bootstrap over eval windows, the retraining noise floor, a seed that knows nothing.

How to run (from Python; search, sweep --target, score-mixture and optimize's held comparison use these):
    from ablate.scoring.uncertainty import bootstrap_values, gap_intervals
    draws = bootstrap_values({"quotes": nll}, {"quotes": n_pred}, value, resamples=1000, seed=0)   # [R, M]
    gaps = gap_intervals(point, draws)     # each candidate's gap to #1, its 95 % interval, tied with #1 or not

Paired: every resample draws one set of windows (with replacement, per eval set) and measures every candidate
on those same windows, so what the windows have in common (a hard page, an easy one) cancels in the gaps, and
two identical models get a gap of exactly 0 in every draw. A candidate is "indistinguishable from #1" when the
interval of its gap reaches 0: another sample of text of the same kind could have put it first. Windows of one
text are not independent (neighbours are alike), so the interval is, if anything, too narrow: read a tie as a
tie, and a separation as "likely", not as proof. Deterministic: the draws come from `seed`.

The noise floor is the other uncertainty: retraining the same union with another data order (`--replicates`)
moves its perplexity too, so two mixtures closer than that cannot be told apart by training them either.
"""

from __future__ import annotations

import math

import numpy as np

from ablate.core.weights import wkey
from ablate.models.model import seed_config
from ablate.scoring.evaluate import windows
from ablate.store.index import Index
from ablate.store.pool import Pool

DEFAULT_RESAMPLES = 1000  # the 2.5 / 97.5 percentiles move by < 0.1 of the interval's width between reruns
CONFIDENCE = 0.95
# A nearly untrained seed: one whose eval perplexity is at least UNTRAINED_FRACTION of its vocabulary (uniform
# guessing is the vocabulary itself), or no better than the eval set's own token frequencies (a unigram model fitted
# on the eval set itself: exp of its token entropy). The second catches large vocabularies, whose unigram level is far
# below V/4 (about V/30 for 49k BPE vocabularies on English); the first small ones, where the unigram level sits near
# V/3 (vocab 512 on the test corpus: 160-173). Either way the members moved from near-noise, and differences
# between their merges of a percent or so say little about the data.
UNTRAINED_FRACTION = 0.25


def window_tokens(n_tokens: int, seq_len: int) -> np.ndarray:
    """Predicted tokens per eval window, in window order (evaluate.windows: the last one may be shorter)."""
    return np.array([b - a - 1 for a, b in windows(n_tokens, seq_len)], dtype=np.int64)


def bootstrap_values(nll: dict[str, np.ndarray], n_pred: dict[str, np.ndarray], value, resamples: int,
                     seed: int) -> np.ndarray:
    """[resamples, M]: `value({eval set: [M] log ppl})` -> [M] on each paired resample of the windows.

    `nll[s]` is [M, W_s] (M candidates' per-window NLL sums on eval set s), `n_pred[s]` [W_s]. Each eval set's
    windows are drawn apart (a stratified bootstrap), the same draw for every candidate."""
    rng = np.random.default_rng(seed)
    out = np.empty((resamples, next(iter(nll.values())).shape[0]))
    for r in range(resamples):
        logppl = {}
        for s, x in nll.items():
            idx = rng.integers(0, x.shape[1], x.shape[1])
            logppl[s] = x[:, idx].sum(1) / n_pred[s][idx].sum()
        out[r] = value(logppl)
    return out


def point_values(nll: dict[str, np.ndarray], n_pred: dict[str, np.ndarray], value) -> np.ndarray:
    """[M]: `value` on every window (no resampling): the candidates' measured values."""
    return np.asarray(value({s: x.sum(1) / n_pred[s].sum() for s, x in nll.items()}), dtype=np.float64)


def gap_intervals(point: np.ndarray, draws: np.ndarray, confidence: float = CONFIDENCE,
                  best: int | None = None) -> list[dict]:
    """Per candidate: gap (its value minus #1's, log ppl), the bootstrap interval of that gap, and `tied_top`
    (the interval reaches 0: not distinguishable from #1). #1 is the lowest point value unless `best` is given."""
    best = int(np.argmin(point)) if best is None else best
    diff = draws - draws[:, [best]]
    lo, hi = np.percentile(diff, [50 * (1 - confidence), 50 * (1 + confidence)], axis=0)
    return [{"gap": float(point[i] - point[best]), "gap_low": float(lo[i]), "gap_high": float(hi[i]),
             "tied_top": bool(lo[i] <= 0.0)} for i in range(len(point))]


def noise_floor(pool: Pool, budget: str = "sum") -> dict[str, dict]:
    """Per eval set, from unions of one ground truth retrained with other data orders (replicate > 0): the pooled
    sd of log union ppl, its threshold (2·√2·sd: two mixtures closer than that cannot be told apart by
    retraining), and `rel_diff`, the largest |union / replicate - 1| seen."""
    _, rows = Index(pool).query("SELECT eval_set, mixture, weights, ln(ppl) AS lu FROM mixture_perplexity "
                                "WHERE method = 'union' AND coalesce(budget, 'sum') = ?", [budget])
    groups: dict[tuple, list[float]] = {}
    for ev, mix, w, lu in rows:
        groups.setdefault((ev, tuple(mix), wkey(w)), []).append(lu)
    out = {}
    for ev in sorted({g[0] for g in groups}):
        reps = [v for g, v in groups.items() if g[0] == ev and len(v) >= 2]
        dof = sum(len(v) - 1 for v in reps)
        if not dof:
            continue
        sd = math.sqrt(sum(sum((x - np.mean(v)) ** 2 for x in v) for v in reps) / dof)
        out[ev] = {"sd_log_ppl": sd, "threshold": 2 * math.sqrt(2) * sd, "mixtures": len(reps),
                   "rel_diff": max(math.exp(max(v) - min(v)) - 1 for v in reps)}
    return out


def seed_warnings(study, seed_ppl: dict[str, float]) -> list[str]:
    """untrained_seed for every eval set the seed was measured on ({eval set: the seed's perplexity})."""
    vocab = getattr(seed_config(study.pool, study.seed["model_id"]), "vocab_size", 0) or 0
    out = []
    for ev, ppl in sorted(seed_ppl.items()):
        if ev in study.tasks:  # a task's perplexity is its answers' alone: no token-frequency level to compare
            continue
        tokens = study.eval_tokens.get(ev)
        line = untrained_seed(ppl, vocab, ev, None if tokens is None else unigram_ppl(tokens))
        out += [line] if line else []
    return out


def unigram_ppl(tokens: np.ndarray) -> float:
    """exp(entropy of the tokens' frequencies): the perplexity of token frequencies alone, fitted in-sample."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64))
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def untrained_seed(seed_ppl: float, vocab_size: int, eval_set: str, unigram: float | None = None) -> str | None:
    """A warning when the seed is nearly untrained on `eval_set` (perplexity ≥ UNTRAINED_FRACTION x vocabulary, or
    ≥ the eval set's unigram perplexity), else None."""
    if vocab_size and seed_ppl >= UNTRAINED_FRACTION * vocab_size:
        why = f"{seed_ppl / vocab_size:.0%} of its vocabulary ({vocab_size})"
    elif unigram and seed_ppl >= unigram:
        why = f"no better than the eval set's token frequencies alone ({unigram:.4g})"
    else:
        return None
    return (f"warning: the seed's perplexity on {eval_set} is {seed_ppl:.4g}, {why}: it is nearly untrained, so "
            f"its members' differences of a percent or so say little about the data; pretrain the seed longer or "
            f"import a trained one")


def gaps_to_best(rows: list[dict], losses: dict[str, np.ndarray], n_pred: dict[str, np.ndarray], *,
                 resamples: int, seed: int, confidence: float = CONFIDENCE) -> None:
    """score-mixture's rows (dicts with row_id, eval_set): per eval set, each row whose per-window losses are in
    `losses` gets `vs_best` (its gap to the set's best such row, log ppl), its interval and `tied_best`."""
    for ev in sorted({r["eval_set"] for r in rows}):
        have = [r for r in rows if r["eval_set"] == ev and len(losses.get(r["row_id"], ())) == len(n_pred[ev])]
        if len(have) < 2 or not resamples:
            continue
        nll = {ev: np.stack([losses[r["row_id"]] for r in have])}
        point = point_values(nll, {ev: n_pred[ev]}, lambda lp: lp[ev])
        draws = bootstrap_values(nll, {ev: n_pred[ev]}, lambda lp: lp[ev], resamples, seed)
        for r, g in zip(have, gap_intervals(point, draws, confidence)):
            r.update(vs_best=g["gap"], vs_best_low=g["gap_low"], vs_best_high=g["gap_high"], tied_best=g["tied_top"])


def describe_gap(gap: float | None, low: float | None, high: float | None) -> str:
    """A gap in log ppl as the user reads it: `+1.23% [+0.80, +1.70]` (relative perplexity, its interval in %)."""
    if gap is None:
        return "-"
    if low is None:
        return f"{math.expm1(gap):+.2%}"
    return f"{math.expm1(gap):+.2%} [{100 * math.expm1(low):+.2f}, {100 * math.expm1(high):+.2f}]"
