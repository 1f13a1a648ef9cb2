"""Screened evaluation: race candidates on growing prefixes of an eval set, drop the clearly worse.

How to run:
    ablate sweep --screen                         # every mixture; only contenders are evaluated in full
    ablate search --target quotes --screen
    ablate sweep --screen --set eval.screen_confidence=0.99 --set eval.screen_tokens=4096

Each eval set's windows are raced in one fixed shuffled order (EvalWindows.shuffled), the same for
every candidate (the comparison is paired), so any prefix is a random sample of the set. Round 0
evaluates every candidate on the first `eval.screen_tokens` tokens of that order, each later round
on `eval.screen_growth` times more, the last on the whole set. After each round the survivors are
ranked by their NLL over the prefix; a candidate is dropped when it is significantly worse than
each of the `eval.screen_keep` best so far: for each of them, the one-sided Student-t lower bound of
the mean paired per-window gap is > 0, with the finite-population correction (what decides the
ranking is the whole set's mean; a prefix of half the set leaves less to chance than a sample of
an infinite one), at `eval.screen_confidence` for the whole race (Bonferroni over rounds x
candidates). A true top-`keep` candidate is then dropped with probability at most 1 - confidence.
A round evaluates only the windows that are new to it (per-window sums are kept), so a dropped
candidate costs the prefix it reached. The survivors of the last round have evaluated everything:
they get ordinary `mixture_perplexity` rows (the same sums as an unscreened run). A dropped
candidate gets a `screened_perplexity` row (its prefix's tokens, round, gap): no fidelity view, fit
or verdict reads that table unless you query it. A prefix longer than the eval set is one round
over everything, i.e. the unscreened sweep.

Limits: windows of one text are not independent (neighbouring windows are alike), so even shuffled
the t-bound is somewhat optimistic; `screen_keep` (default 3) keeps the top three racing to the end
so a near-tie is never decided on a prefix. Screening cannot save more than candidates / keep, and
on small eval sets (tens of windows) the first round is already a large share: it pays with many
candidates and long eval sets. Cached full rows are not re-raced: screening applies to what is
still to evaluate.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from ablate.core.energy import Meter
from ablate.scoring.batched import shuffle_order, study_stack, window_stats
from ablate.scoring.score import study_row
from ablate.store.results import attach_cost, write_rows

MIN_WINDOWS = 2  # a t-interval needs a spread
WINDOW_ORDER_SEED = 0  # one fixed shuffle: a screened run is reproducible


def drops(gaps: np.ndarray, confidence: float, population: int | None = None) -> tuple[bool, float]:
    """(significantly worse?, mean gap) for a candidate's per-window NLL gaps to a reference.

    `population`: the windows of the whole eval set, when `gaps` are a random sample of them. What
    decides the ranking is the mean gap over the whole set, so the interval shrinks by the finite
    population correction sqrt((N - n) / (N - 1)): half the set seen leaves ~0.7 of the spread
    uncertain, all of it none."""
    n, mean = gaps.size, float(gaps.mean())
    if n < MIN_WINDOWS:
        return False, mean
    fpc = math.sqrt(max(0, population - n) / max(1, population - 1)) if population else 1.0
    sd = float(gaps.std(ddof=1)) * fpc
    from scipy import stats  # here, not at the top: ~0.9 s to import, and every command imports this module

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


def first_windows(tokens: int, seq_len: int) -> int:
    """Round 0's windows: `eval.screen_tokens` worth, and at least the two a t-interval needs."""
    return max(MIN_WINDOWS, -(-tokens // seq_len))


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
    # Bonferroni: a true top-`keep` candidate is dropped only when a test against a truly-no-better one
    # fires, and which candidates serve as references is decided by the data, so the bound is a union
    # over every candidate it may meet, in every round: (rounds - 1) x (candidates - 1) tests. Each true
    # top candidate then survives with probability >= confidence (windows drawn at random: the caller
    # races a shuffled order, see EvalWindows.shuffled).
    level = 1.0 - (1.0 - confidence) / max(1, (len(rounds) - 1) * max(1, n_cands - 1))
    for rnd, stop in enumerate(rounds):
        result.rounds.append(stop)
        result.nll[alive, start:stop] = evaluate(alive, start, stop)
        result.reached[alive] = stop
        start = stop
        if stop == n_windows:
            break
        ranked = sorted(alive, key=lambda c: result.nll[c, :stop].sum())
        refs = ranked[:keep]
        for c in ranked[keep:]:
            # dropped only when significantly worse than each of the `keep` best so far: if c were truly in
            # the top `keep`, one of them would be truly no better than c, and that test a false alarm
            tests = [drops(result.nll[c, :stop] - result.nll[r, :stop], level, n_windows) for r in refs]
            if all(worse for worse, _ in tests):
                result.dropped_in[c], result.gap[c] = rnd, tests[-1][1]
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

    result = race(len(cands), len(windows), evaluate, first=first_windows(ev.screen_tokens, ev.seq_len),
                  growth=ev.screen_growth, confidence=ev.screen_confidence, keep=ev.screen_keep)
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
            w = windows[ev["domain"]].shuffled(WINDOW_ORDER_SEED)  # prefixes = random samples
            result, seconds = screen_eval_set(study, stack, w, cands, lambda slot, c: load(stack, slot, c))
            for c, cand in enumerate(cands):
                stop = int(result.reached[c])
                row = study_row(study, ev, window_stats(w, result.nll[c], float(seconds[c]), stop), method=method,
                               mixture=cand["mixture"], weights=cand["weights"], model_id=cand["model_id"],
                               n_nonembed=n_nonembed, device=study.device)
                if result.dropped_in[c] < 0:  # per-window losses back in file order, as every other row keeps them
                    order = shuffle_order(w.full.size(0), len(w), WINDOW_ORDER_SEED)
                    nll = np.asarray(result.nll[c], dtype=np.float64)[np.argsort(order)]
                    row["window_nll"] = [float(x) for x in nll]
                    full.append(row)
                else:
                    row.pop("window_nll", None)  # a prefix: no bootstrap reads it
                    dropped.append(screened_row(row, result, c, w, screen_id, cfg.eval.screen_confidence))
                used += int(w.n_pred[:stop].sum())
            whole += len(cands) * int(w.n_pred.sum())
    attach_cost(full + dropped, meter.result)
    write_rows(pool, full)
    write_rows(pool, dropped, table="screened_perplexity")
    return {"screen_id": screen_id, "full_rows": full, "screened_rows": dropped, "eval_tokens": used,
            "eval_tokens_unscreened": whole}
