"""Candidates, not one point: the weights a gradient route offers, ranked on the fit windows, measured on the held.

How to run (from Python; the merged and ensemble routes call it after their descent, when `optimize.candidates`
is above 1; `ablate optimize --candidates 1` keeps the route's optimum alone):
    found = find_candidates(proxy, objective, prior, caps, study.cfg.optimize, reference, tokens, units,
                            optimum, split, lattice_max=8000, edge_units=None, polish=6)
    found[0]["weights"], found[0]["source"], found[0]["fit"], found[0]["held"]["gain"]

Where the best mixture is a corner a coarse grid beat the continuous optimizer (5 of 6 on one study), and the
routes disagree case by case, so one descent from the prior is one guess. The starts: the route's own optimum (its descent from
the prior); the corners (each unit alone, within the repetition caps: a capped unit at its cap, the rest spread);
the edges (each pair, half and half); and every vector of a lattice of weights (multiples of 1/m over up to m
units, m the finest of 8, 4, 2 whose lattice has at most `lattice_max` points; 1/8 over 8 units is 6,435 points).
Every start is scored by the proxy on the fit windows; the best `polish` that are not corners are walked
down by the protocol's descent (a quarter of its steps: POLISH_SHARE) from where they are (a weight at 0 stays
at 0, so a start is polished within its own support: an edge finds its best ratio); then near-duplicates (L1
distance below MIN_DISTANCE) are dropped, the better kept, and the rest ranked by the fit-window objective. The top `optimize.candidates` are then measured on
the held windows against the uniform weights (protocol.compare_held): the first is what the gate judges, the
others are what `--validate K` retrains. When `optimize` chose the route by the kind of target, the partner route's
top candidate (defaults.PARTNER_ROUTE) is held at #2, so `--validate 2` retrains both routes' picks.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ablate.optimize.objectives import Objective
from ablate.optimize.protocol import compare_held, descend
from ablate.optimize.simplex import project

# A polish starts on the lattice or an edge, within one spacing (1/8 to 1/2) of where it settles, where the route's
# own descent starts from the prior: a quarter of the descent's steps (10 of 40) still moves a log-weight by up to
# Σ lr·(1 − i/10) ≈ 1.6 (×5), past one spacing, at a quarter of the cost (on the merged route, a polish is a
# descent of forward and backward passes: two full ones made `optimize` 3x slower than one descent)
POLISH_SHARE, MIN_POLISH_STEPS = 4, 5
MIN_DISTANCE = 0.05  # two weights vectors closer than this in L1 are one candidate (a 2.5 % shift of one unit)
LATTICE_STEPS = (8, 4, 2)


@dataclass(frozen=True)
class CandidateProxy:
    """What a route's proxy answers for a candidate: fit-window log ppl per eval set (`values`), with its slopes
    (`values_and_slopes`, for polishing), for many weights at once (`many`, [L, n] -> one dict per row; None:
    `values` row by row) and per-window NLL on the held windows (`held`)."""

    values: Callable[[np.ndarray], dict]
    values_and_slopes: Callable[[np.ndarray], tuple]
    held: Callable[[np.ndarray], dict]
    many: Callable[[np.ndarray], list] | None = None


def lattice_count(n: int, m: int) -> int:
    """Vectors with entries in multiples of 1/m summing to 1 over n units: C(n + m - 1, m)."""
    return math.comb(n + m - 1, m)


def lattice(n: int, lattice_max: int) -> np.ndarray:
    """[L, n]: every vector of the finest lattice (1/8, 1/4, 1/2) with at most `lattice_max` points; the corners
    alone ([n, n]) when even halves are too many."""
    m = next((m for m in LATTICE_STEPS if lattice_count(n, m) <= lattice_max), 1)
    rows = []
    for k in range(1, min(n, m) + 1):
        for support in itertools.combinations(range(n), k):
            for cut in itertools.combinations(range(1, m), k - 1):  # a composition of m into k positive parts
                parts = np.diff([0, *cut, m])
                row = np.zeros(n)
                row[list(support)] = parts / m
                rows.append(row)
    return np.asarray(rows)


def feasible(w: np.ndarray, caps: np.ndarray | None) -> np.ndarray:
    """A start within the repetition caps: w itself if its support can carry the budget, else the capped units at
    their cap and the rest of the budget spread over the others (a corner of a capped unit)."""
    w = np.asarray(w, dtype=np.float64)
    if caps is None or np.all(w <= caps + 1e-12):
        return w / w.sum()
    support = w > 0
    if caps[support].sum() >= 1 - 1e-9:
        return project(w, np.where(support, caps, 0.0))
    return project(w + 1e-3 * (~support), caps)


def _name(w: np.ndarray, units: list[str]) -> str:
    nz = np.flatnonzero(w > 0)
    if len(nz) == 1:
        return f"corner {units[nz[0]]}"
    if len(nz) == 2 and abs(w[nz[0]] - w[nz[1]]) < 1e-9:
        return f"edge {units[nz[0]]}+{units[nz[1]]}"
    return f"lattice ({len(nz)} units)"


def find_candidates(proxy: CandidateProxy, objective: Objective, prior: np.ndarray, caps: np.ndarray | None, opt,
                    reference: dict | None, tokens: dict, units: list[str], optimum: np.ndarray, split: dict,
                    lattice_max: int, edge_units: int | None, polish: int, shortlist: tuple = ()) -> list[dict]:
    """The ranked, distinct candidates, the top `opt.candidates` of them measured on the held windows: [{"weights",
    "source", "fit" (the objective on the fit windows), "held" (protocol.compare_held against uniform)}].
    `edge_units`: pairs among the best this many corners (None: every pair). `shortlist`: ((source, weights),)
    another route offered, held at #2 whatever this proxy thinks of them (hold_second)."""
    n = len(units)
    value = lambda v: objective.value(v, reference, tokens)  # noqa: E731
    score_many = proxy.many or (lambda W: [proxy.values(w) for w in W])

    corners = np.eye(n)
    corner_fit = [value(v) for v in score_many(np.asarray([feasible(c, caps) for c in corners]))]
    best = np.argsort(corner_fit, kind="stable")[: n if edge_units is None else edge_units]
    edges = [np.where(np.isin(np.arange(n), pair), 0.5, 0.0) for pair in itertools.combinations(sorted(best), 2)]
    grid = lattice(n, lattice_max)
    starts = np.unique(np.round(np.asarray([feasible(w, caps) for w in [*grid, *edges]]), 12), axis=0)
    fits = [value(v) for v in score_many(starts)] if len(starts) else []
    pool = [{"weights": feasible(c, caps), "source": f"corner {units[i]}", "fit": corner_fit[i]}
            for i, c in enumerate(corners)]
    pool += [{"weights": w, "source": _name(w, units), "fit": f} for w, f in zip(starts, fits)]
    pool.sort(key=lambda c: c["fit"])

    polished, starts = [], [c for c in pool if np.count_nonzero(c["weights"]) > 1][:polish]
    short = opt.model_copy(update={"steps": max(MIN_POLISH_STEPS, opt.steps // POLISH_SHARE)})
    for i, start in enumerate(starts):
        final, _, _ = descend(proxy.values_and_slopes, objective, prior, caps, short, reference, tokens,
                              start=start["weights"], label=f"polish {i + 1}/{len(starts)}")
        polished.append({"weights": final, "source": f"{start['source']}, polished", "fit": value(proxy.values(final))})
    optimum = np.asarray(optimum, dtype=np.float64)
    everything = [{"weights": optimum, "source": "route optimum", "fit": value(proxy.values(optimum))},
                  *polished, *pool]
    kept = distinct(sorted(everything, key=lambda c: c["fit"]), opt.candidates)
    for source, w in shortlist:
        w = np.asarray(w, dtype=np.float64)
        kept = hold_second(kept, {"weights": w, "source": source, "fit": value(proxy.values(w)), "also": []},
                           opt.candidates)

    uniform_held = proxy.held(np.full(n, 1.0 / n))
    for c in kept:
        c["held"] = compare_held({"optimized": proxy.held(c["weights"]), "uniform": uniform_held}, split, objective,
                                 opt.bootstrap, opt.split_seed)
        c["weights"] = c["weights"].tolist()
    return kept


def hold_second(kept: list[dict], other: dict, limit: int) -> list[dict]:
    """`other` (another route's pick) at #2 of the shortlist, the rest after it, `limit` in all: the proxy that
    ranked `kept` is one view, and the routes disagree case by case. A near-duplicate of a kept candidate is that
    candidate (moved up to #2 unless it is #1), its source added to `also`."""
    twin = next((i for i, c in enumerate(kept) if np.abs(c["weights"] - other["weights"]).sum() < MIN_DISTANCE), None)
    if twin is not None:
        kept[twin]["also"].append(other["source"])
        if twin > 1:
            kept.insert(1, kept.pop(twin))
        return kept
    return (kept[:1] + [other] + kept[1:])[:limit]


def distinct(ranked: list[dict], limit: int | None = None) -> list[dict]:
    """The first `limit` candidates, best first, without near-duplicates (L1 below MIN_DISTANCE of a better one:
    dropped, its source kept as `also`). Stops at the limit: a lattice has thousands of points."""
    out: list[dict] = []
    for c in ranked:
        twin = next((o for o in out if np.abs(o["weights"] - c["weights"]).sum() < MIN_DISTANCE), None)
        if twin is None:
            if limit is not None and len(out) == limit:
                break
            out.append(dict(c, also=[]))
        elif c["source"] not in twin["also"] and c["source"] != twin["source"]:
            twin["also"].append(c["source"])
    return out
