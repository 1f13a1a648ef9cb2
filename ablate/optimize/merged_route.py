"""The merged route: mixture weights by mirror descent through the merge, judged on windows it never saw.

How to run:
    ablate optimize --target quotes                          # one eval set, all of the pool's units
    ablate optimize --target fiction,bible,quotes --objective worst --units fiction-00,bible-00,pydocs-00

The protocol is optimize/protocol.py's (the seeded fit/held split, the mirror descent within the repetition
caps, the sparsity floor, the paired bootstrap on the held windows, the proxy-error gate on trained unions);
what is the merge's own is the proxy: every step loads theta(w) into the seed's architecture, runs forward and
backward over the fit windows of each eval set the objective reads, and turns the parameter gradient into one
slope per unit (scoring.inplace.MemberSpace.project); the held windows are measured on the merged model too.
The descent's log-weight move per step is at most `optimize.lr`, decaying linearly to 0, so lr x steps / 2 bounds
how far any weight can go from the prior (a trust region whose size does not depend on the gradients' scale).
When the held gain's interval reaches 0 the answer is "nothing beats uniform beyond what the proxy can resolve",
and the uniform weights are the recommendation (the optimized ones are still reported). The bootstrap knows
window noise, not the proxy's bias: where trained unions of these units exist (the uniform one and others),
`proxy_error` (optimize/protocol.py) measures how far the merged gain over uniform is from the trained one on
them, and a held gain not above that error is not believed either (protocol.gate decides, when
optimize/optimization.py stores the row; FIDELITY.md "Optimized mixtures, retrained" shows why).
"""

from __future__ import annotations

import time

import numpy as np

from ablate.models.model import model_from_config, seed_config
from ablate.optimize.candidates import CandidateProxy, find_candidates
from ablate.optimize.losses import set_nll, window_nll
from ablate.optimize.objectives import Objective
from ablate.optimize.plan import Plan
from ablate.optimize.protocol import Route, compare_held, descend, predicted, proxy_error, split_windows
from ablate.optimize.trained import calibration_values
from ablate.scoring.inplace import MemberSpace
from ablate.study.context import Study

# Candidates (optimize/candidates.py): every start is a forward pass over the fit windows and every polish a descent,
# so the lattice is coarse (at most 40 points: 4 units in quarters, 8 in halves, corners alone beyond), edges only
# among the 6 best corners, and the 2 best starts polished (the route's cost about 3x one descent).
LATTICE_MAX = 40
EDGE_UNITS = 6
POLISH = 2


def run(cfg, pool, study: Study, plan: Plan, caps: np.ndarray | None) -> dict:
    """The route's entry (routes.py): the plan's units and objective, the proxy's error on the trained unions."""
    return optimize_merged(study, plan.units, plan.objective, caps,
                           calibration=calibration_values(cfg, pool, study, plan),
                           shortlist=plan.shortlist)


def optimize_merged(study: Study, units: list[str], objective: Objective, caps: np.ndarray | None,
                    prior: np.ndarray | None = None, calibration: dict | None = None, log=print,
                    shortlist: tuple = ()) -> dict:
    """Mirror descent on the fit windows, then both weights measured on the held ones; returns the result.

    `calibration` ({"uniform": fit values, "unions": [(weights over `units`, fit values)]}: trained unions'
    log ppl per eval set on the fit windows) adds the proxy's own error on this objective (proxy_error)."""
    opt, cfg = study.cfg.optimize, study.cfg
    n = len(units)
    prior = np.full(n, 1.0 / n) if prior is None else prior
    members = [study.unit_member(u) for u in units]
    model = model_from_config(seed_config(study.pool, study.seed["model_id"]), study.device)
    t0 = time.perf_counter()
    space = MemberSpace.of_members(study.pool, members, model, full_hash=cfg.verify_hash)
    split = split_windows(study, objective.eval_sets, opt.fit_fraction, opt.split_seed)
    tokens = {s: int(predicted(split[s], "fit").sum()) for s in split}
    uniform = np.full(n, 1.0 / n)
    reference = fit_values(space, model, split, uniform, cfg.eval.batch_size) if objective.needs_reference else None
    final, w, history = descend(lambda w: _fit_values_and_slopes(space, model, split, w, cfg.eval.batch_size),
                                objective, prior, caps, opt, reference, tokens)
    if opt.candidates > 1:
        proxy = CandidateProxy(lambda w: fit_values(space, model, split, w, cfg.eval.batch_size),
                               lambda w: _fit_values_and_slopes(space, model, split, w, cfg.eval.batch_size),
                               lambda w: held_windows(space, model, split, w, cfg.eval.batch_size))
        found = find_candidates(proxy, objective, prior, caps, opt, reference, tokens, units, final, split,
                                shortlist=shortlist, lattice_max=LATTICE_MAX, edge_units=EDGE_UNITS, polish=POLISH)
        top, held, fit_final = np.asarray(found[0]["weights"]), found[0]["held"], found[0]["fit"]
    else:  # the route's optimum alone (`--candidates 1`)
        held = held_comparison(space, model, split, final, uniform, objective, cfg.eval.batch_size, opt.bootstrap,
                               opt.split_seed)
        top, found = final, None
        fit_final = objective.value(fit_values(space, model, split, final, cfg.eval.batch_size), reference, tokens)
    uniform_values = reference or fit_values(space, model, split, uniform, cfg.eval.batch_size)
    fit_uniform = objective.value(uniform_values, reference, tokens)
    error = None if calibration is None else proxy_error(
        lambda w: fit_values(space, model, split, w, cfg.eval.batch_size), objective, calibration, uniform_values,
        tokens)
    return {"units": units, "members": members, "weights": top.tolist(), "raw_weights": w.tolist(),
            "route_weights": final.tolist(), "candidates": found, "proxy_error": error,
            "fit": {"optimized": fit_final, "uniform": fit_uniform}, "held": held, "history": history,
            "steps": opt.steps, "seconds": time.perf_counter() - t0, "in_memory": space.in_memory,
            "fit_windows": {s: int(split[s]["fit"].size(0)) for s in split},
            "held_windows": {s: int(split[s]["held"].size(0)) for s in split}}


def fit_values(space: MemberSpace, model, split: dict, w: np.ndarray, batch_size: int) -> dict[str, float]:
    space.load(w)
    return {s: _logppl(*set_nll(model, part["fit"], batch_size, grad=False, mask=part["fit_mask"]))
            for s, part in split.items()}


def _fit_values_and_slopes(space: MemberSpace, model, split: dict, w: np.ndarray, batch_size: int):
    """Per eval set: log ppl on its fit windows and dL/dw (one backward per set)."""
    space.load(w)
    values, slopes = {}, {}
    for s, part in split.items():
        model.zero_grad(set_to_none=True)
        values[s] = _logppl(*set_nll(model, part["fit"], batch_size, grad=True, mask=part["fit_mask"]))
        slopes[s] = space.project()
    model.zero_grad(set_to_none=True)
    return values, slopes


def _logppl(nll: float, n_pred: int) -> float:
    return nll / n_pred


def held_comparison(space: MemberSpace, model, split: dict, w: np.ndarray, uniform: np.ndarray,
                    objective: Objective, batch_size: int, resamples: int, seed: int) -> dict:
    """Both weights on the held windows: objective values, the gain (uniform - optimized, > 0 is better)
    with a paired bootstrap interval over windows, per-set log ppl, and whether the guards held."""
    per = {label: held_windows(space, model, split, weights, batch_size)
           for label, weights in (("optimized", w), ("uniform", uniform))}
    return compare_held(per, split, objective, resamples, seed)


def held_windows(space: MemberSpace, model, split: dict, w: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """The merged model's per-window NLL on each eval set's held windows."""
    space.load(w)
    return {s: window_nll(model, part["held"], batch_size, part["held_mask"]) for s, part in split.items()}


ROUTE = Route("merged", "gradients through the merge, no union needed", run)
