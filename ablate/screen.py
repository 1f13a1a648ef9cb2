"""Screened evaluation: race candidates on growing prefixes of an eval set, drop the clearly worse.

How to run:
    ablate sweep --screen                         # every mixture; only contenders are evaluated in full
    ablate search --target quotes --screen
    ablate sweep --screen --set eval.screen_confidence=0.99 --set eval.screen_tokens=4096

Round 0 evaluates every candidate on the first `eval.screen_tokens` tokens of the eval set (the
same windows for all: the comparison is paired), each later round on `eval.screen_growth` times
more, the last on the whole set. After each round the survivors are ranked by their NLL over the
prefix; a candidate is dropped when its per-window gap to the `eval.screen_keep`-th best (1: the
leader) is significantly above zero: the one-sided Student-t lower bound of the mean paired gap is
> 0, at `eval.screen_confidence` for the whole race (Bonferroni over rounds x candidates), so the
best candidate is dropped with probability at most 1 - confidence. A round evaluates only the windows that are new to it (per-
window sums are kept), so a dropped candidate costs the prefix it reached. The survivors of the
last round have evaluated everything: they get ordinary `mixture_perplexity` rows. A dropped
candidate gets a `screened_perplexity` row (its prefix's tokens, round, gap): no fidelity view,
fit or verdict reads that table unless you query it. A prefix longer than the eval set is one
round over everything, i.e. the unscreened sweep.

Windows are not independent samples (neighbouring text is alike), so the t-bound is optimistic;
`screen_keep` (default 3) keeps the top three racing to the end so a near-tie is never decided on
a prefix. Cached full rows are not re-raced: screening applies to what is still to evaluate.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from ablate.batched import study_stack, window_stats
from ablate.energy import Meter
from ablate.results import attach_cost, write_rows
from ablate.score import study_row

MIN_WINDOWS = 2  # a t-interval needs a spread


def drops(gaps: np.ndarray, confidence: float) -> tuple[bool, float]:
    """(significantly worse?, mean gap) for a candidate's per-window NLL gaps to the reference."""
    n, mean = gaps.size, float(gaps.mean())
    if n < MIN_WINDOWS:
        return False, mean
    sd = float(gaps.std(ddof=1))
    if sd == 0.0:
        return mean > 0.0, mean
    return mean - stats.t.ppf(confidence, n - 1) * sd / math.sqrt(n) > 0.0, mean


@dataclass
class Race:
    """Per candidate: per-window NLL where evaluated, windows reached, the round it was dropped in."""

    nll: np.ndarray                      # [candidates, windows], NaN where not evaluated
    reached: np.ndarray                  # windows evaluated per candidate
    dropped_in: np.ndarray               # round index, -1 for a finalist
    gap: np.ndarray                      # mean per-window gap to the reference when dropped
    rounds: list[int] = field(default_factory=list)  # each round's prefix, in windows

    @property
    def finalists(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.dropped_in < 0)]


def prefixes(n_windows: int, first: int, growth: int) -> list[int]:
    """Each round's prefix in windows: first, first x growth, ... , then the whole set."""
    out, p = [], max(1, first)
    while p < n_windows:
        out.append(p)
        p *= growth
    return out + [n_windows]


def race(n_cands: int, n_windows: int, evaluate, *, first: int, growth: int, confidence: float,
         keep: int = 1) -> Race:
    """Race candidates 0..n-1; `evaluate(candidates, start, stop)` → [len, stop - start] window NLL."""
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    result = Race(np.full((n_cands, n_windows), np.nan), np.zeros(n_cands, dtype=np.int64),
                  np.full(n_cands, -1), np.full(n_cands, np.nan))
    alive, start = list(range(n_cands)), 0
    rounds = prefixes(n_windows, first, growth)
    # Bonferroni over every test the race may make (rounds x candidates): the leader is the luckiest of
    # many and each candidate is tested once per round, so a per-test level would drop a tie far more
    # often than 1 - confidence. This way the best candidate survives with probability >= confidence
    # (windows as independent samples).
    level = 1.0 - (1.0 - confidence) / max(1, (len(rounds) - 1) * max(1, n_cands - keep))
    for rnd, stop in enumerate(rounds):
        result.rounds.append(stop)
        result.nll[alive, start:stop] = evaluate(alive, start, stop)
        result.reached[alive] = stop
        start = stop
        if stop == n_windows:
            break
        ranked = sorted(alive, key=lambda c: result.nll[c, :stop].sum())
        ref = ranked[min(keep, len(ranked)) - 1]
        for c in ranked[keep:]:
            worse, mean_gap = drops(result.nll[c, :stop] - result.nll[ref, :stop], level)
            if worse:
                result.dropped_in[c], result.gap[c] = rnd, mean_gap
        alive = [c for c in alive if result.dropped_in[c] < 0]
    return result


def screen_eval_set(study, stack, windows, cands: list, load) -> tuple[Race, np.ndarray]:
    """Race `cands` on one eval set's windows. `load(slot, cand)` puts a candidate's weights in a slot;
    candidates are evaluated `stack.slots` at a time in the order given (Gray order keeps loads cheap).
    Returns the race and each candidate's evaluation seconds."""
    ev = study.cfg.eval
    seconds = np.zeros(len(cands))

    def evaluate(idx: list[int], start: int, stop: int) -> np.ndarray:
        out = np.empty((len(idx), stop - start))
        for at in range(0, len(idx), stack.slots):
            group = idx[at:at + stack.slots]
            for slot, c in enumerate(group):
                load(slot, cands[c])
            t0 = time.perf_counter()
            out[at:at + len(group)] = stack.window_nll(windows, ev.batch_size, len(group), start, stop,
                                                       precision=study.precision)
            seconds[group] += (time.perf_counter() - t0) / len(group)
        return out

    first = max(1, -(-ev.screen_tokens // ev.seq_len))
    result = race(len(cands), len(windows), evaluate, first=first, growth=ev.screen_growth,
                  confidence=ev.screen_confidence, keep=ev.screen_keep)
    return result, seconds


def screened_row(full_row: dict, result: Race, c: int, windows, screen_id: str, confidence: float) -> dict:
    """A dropped candidate's row for `screened_perplexity`: its prefix's sums and how it was dropped."""
    return {**full_row, "row_id": f"{full_row['row_id']}:{screen_id}", "screened": True, "screen_id": screen_id,
            "screen_round": int(result.dropped_in[c]), "screen_windows": int(result.reached[c]),
            "full_windows": len(windows), "confidence": confidence, "leader_gap": float(result.gap[c])}


def new_screen_id() -> str:
    return f"screen-{uuid.uuid4().hex[:10]}"


def screen_candidates(study, cands: list[dict], load, *, method: str = "merged") -> dict:
    """Screened evaluation of `cands` (dicts: mixture, weights, model_id) on every eval set of `study`:
    finalists' rows to mixture_perplexity, dropped ones' to screened_perplexity, all priced by one meter.
    `load(stack, slot, cand)` puts a candidate's weights in a slot. Returns rows and token counts."""
    cfg, pool = study.cfg, study.pool
    stack, windows, n_nonembed = study_stack(study)
    screen_id, full, dropped = new_screen_id(), [], []
    used = whole = 0
    with Meter(cfg.energy) as meter:
        for ev in study.evals:
            w = windows[ev["domain"]]
            result, seconds = screen_eval_set(study, stack, w, cands, lambda slot, c: load(stack, slot, c))
            for c, cand in enumerate(cands):
                stop = int(result.reached[c])
                row = study_row(study, ev, window_stats(w, result.nll[c], float(seconds[c]), stop), method=method,
                               mixture=cand["mixture"], weights=cand["weights"], model_id=cand["model_id"],
                               n_nonembed=n_nonembed, device=study.device)
                if result.dropped_in[c] < 0:
                    full.append(row)
                else:
                    dropped.append(screened_row(row, result, c, w, screen_id, cfg.eval.screen_confidence))
                used += int(w.n_pred[:stop].sum())
            whole += len(cands) * int(w.n_pred.sum())
    attach_cost(full + dropped, meter.result)
    write_rows(pool, full)
    write_rows(pool, dropped, table="screened_perplexity")
    return {"screen_id": screen_id, "full_rows": full, "screened_rows": dropped, "eval_tokens": used,
            "eval_tokens_unscreened": whole}
