"""The ensemble route: mixture weights by exact gradients of the per-token mixture, judged on held windows.

How to run:
    ablate optimize --target quotes --route ensemble
    ablate optimize --target fiction,bible,quotes --objective worst --route ensemble

The same protocol as the merged route (optimize/protocol.py: the seeded fit/held split of each eval set's full
windows, mirror descent within the repetition caps, the sparsity floor, the paired bootstrap on the held
windows, the proxy-error gate on trained unions), with the merged model replaced by the members' output
mixture p(x) = Σ w_i p_i(x) (ablate/scoring/ensemble.py). Every member is evaluated once per eval set (the
token-loss cache); each step is then a few array operations and its gradient is exact, with no forward or
backward pass. Why a second route: where no unit covers the target the merge ranks mixtures worst, and the
ensemble best (FIDELITY.md, eval-only targets).
"""

from __future__ import annotations

import time

import numpy as np

from ablate.optimize.candidates import CandidateProxy, find_candidates
from ablate.optimize.objectives import Objective
from ablate.optimize.plan import Plan
from ablate.optimize.protocol import Route, compare_held, descend, predicted, proxy_error, split_windows
from ablate.optimize.trained import calibration_values
from ablate.scoring.ensemble import member_nll, mixed_nll, segment_sums, weight_gradient
from ablate.study.context import Study

# Candidates (optimize/candidates.py): every start is a few array operations here, so the lattice is fine (1/8 over 8
# units: 6,435 points; 16 units: 1/4, 3,876) and the best 4 starts are polished (each a descent: at 16 units and
# 33k fit tokens about 5 s on 2 busy cores).
LATTICE_MAX = 8000
POLISH = 4


def select_windows(per_token: np.ndarray, index: np.ndarray, seq_len: int) -> np.ndarray:
    """[windows, seq_len - 1] per-token NLL of the full windows `index` (the cache's window order)."""
    width = seq_len - 1
    return per_token[: (int(index.max()) + 1) * width].reshape(-1, width)[index] if len(index) else \
        np.empty((0, width), dtype=per_token.dtype)


def select_examples(per_token: np.ndarray, sizes: np.ndarray, index: np.ndarray) -> np.ndarray:
    """A task's per-token NLL (its answers' tokens, example after example) of the examples `index`, flat."""
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.concatenate([per_token[starts[i]:starts[i] + sizes[i]] for i in index])


class TokenSpace:
    """The members' per-token NLL on each eval set's fit and held windows: [k, windows, seq_len - 1]; a task's
    (ablate/scoring/tasks.py) flat, [k, answer tokens], its held examples' sizes in `held_sizes`."""

    def __init__(self, study: Study, members: list[str], split: dict):
        seq_len = study.cfg.eval.seq_len
        losses = [member_nll(study, m)[0] for m in members]
        sizes = {ev["domain"]: np.asarray(ev["window_tokens"]) for ev in study.evals if ev.get("task")}
        self.held_sizes = {s: sizes[s][part["held_index"]] for s, part in split.items() if s in sizes}

        def pick(s: str, index: np.ndarray) -> np.ndarray:
            if s in sizes:
                return np.stack([select_examples(L[s], sizes[s], index) for L in losses])
            return np.stack([select_windows(L[s], index, seq_len) for L in losses])

        self.fit = {s: pick(s, part["fit_index"]) for s, part in split.items()}
        self.held = {s: pick(s, part["held_index"]) for s, part in split.items()}

    def values(self, w: np.ndarray) -> dict[str, float]:
        """Log ppl of the mixture on each eval set's fit windows."""
        return {s: float(mixed_nll(x.reshape(x.shape[0], -1), w).mean()) for s, x in self.fit.items()}

    def many(self, weights: np.ndarray) -> list[dict[str, float]]:
        """`values` for every row of weights [L, n] at once (a lattice of candidates): one matrix product per eval
        set and chunk instead of L passes."""
        out = [{} for _ in range(len(weights))]
        for s, x in self.fit.items():
            flat = x.reshape(x.shape[0], -1).astype(np.float64)
            best = flat.min(axis=0)
            scaled = np.exp(best - flat)  # [k, T]: mixed_nll's, shared by every row
            chunk = max(1, 20_000_000 // flat.shape[1])
            for i in range(0, len(weights), chunk):
                rows = (best - np.log(weights[i:i + chunk] @ scaled)).mean(axis=1)
                for j, v in enumerate(rows):
                    out[i + j][s] = float(v)
        return out

    def slopes(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """d(log ppl on the fit windows)/dw per eval set, exact."""
        return {s: weight_gradient(x.reshape(x.shape[0], -1), w) / x[0].size for s, x in self.fit.items()}

    def held_windows(self, w: np.ndarray) -> dict[str, np.ndarray]:
        return {s: segment_sums(mixed_nll(x, w), self.held_sizes[s]) if s in self.held_sizes else
                mixed_nll(x.reshape(x.shape[0], -1), w).reshape(x.shape[1], x.shape[2]).sum(axis=1)
                for s, x in self.held.items()}


def run(cfg, pool, study: Study, plan: Plan, caps: np.ndarray | None) -> dict:
    """The route's entry (routes.py): the plan's units and objective, the proxy's error on the trained unions."""
    return optimize_ensemble(study, plan.units, plan.objective, caps,
                             calibration=calibration_values(cfg, pool, study, plan),
                             shortlist=plan.shortlist)


def optimize_ensemble(study: Study, units: list[str], objective: Objective, caps: np.ndarray | None,
                      prior: np.ndarray | None = None, calibration: dict | None = None, log=print,
                      shortlist: tuple = ()) -> dict:
    """Mirror descent on the fit windows' ensemble loss, then both weights on the held ones (merged route's
    result layout, so storing, gating and validating are the same)."""
    opt = study.cfg.optimize
    n = len(units)
    prior = np.full(n, 1.0 / n) if prior is None else prior
    members = [study.unit_member(u) for u in units]
    t0 = time.perf_counter()
    split = split_windows(study, objective.eval_sets, opt.fit_fraction, opt.split_seed)
    space = TokenSpace(study, members, split)
    tokens = {s: int(predicted(split[s], "fit").sum()) for s in split}
    uniform = np.full(n, 1.0 / n)
    reference = space.values(uniform) if objective.needs_reference else None
    final, w, history = descend(lambda w: (space.values(w), space.slopes(w)), objective, prior, caps, opt,
                                reference, tokens)
    if opt.candidates > 1:
        proxy = CandidateProxy(space.values, lambda w: (space.values(w), space.slopes(w)), space.held_windows,
                               space.many)
        found = find_candidates(proxy, objective, prior, caps, opt, reference, tokens, units, final, split,
                                shortlist=shortlist, lattice_max=LATTICE_MAX, edge_units=None, polish=POLISH)
        top, held, fit_top = np.asarray(found[0]["weights"]), found[0]["held"], found[0]["fit"]
    else:  # the route's optimum alone (`--candidates 1`)
        per = {"optimized": space.held_windows(final), "uniform": space.held_windows(uniform)}
        held = compare_held(per, split, objective, opt.bootstrap, opt.split_seed)
        top, found, fit_top = final, None, objective.value(space.values(final), reference, tokens)
    uniform_values = reference or space.values(uniform)
    error = None if calibration is None else proxy_error(space.values, objective, calibration, uniform_values, tokens)
    return {"units": units, "members": members, "weights": top.tolist(), "raw_weights": w.tolist(),
            "route_weights": final.tolist(), "candidates": found, "proxy_error": error,
            "fit": {"optimized": fit_top, "uniform": objective.value(uniform_values, reference, tokens)},
            "held": held, "history": history, "steps": opt.steps, "seconds": time.perf_counter() - t0,
            "in_memory": True, "fit_windows": {s: int(split[s]["fit"].size(0)) for s in split},
            "held_windows": {s: int(split[s]["held"].size(0)) for s in split}}


ROUTE = Route("ensemble", "exact gradients of the members' per-token mixture, from cached token losses", run)
