"""The regression route: weights from a RegMix-style regression on trained unions, at their training cost.

How to run:
    ablate optimize --target quotes --route regression          # every trained union of these units' budget
    ablate optimize --target quotes --route regression --units a,b,c

Per eval set the objective reads, log ppl ~ b + sum_u beta_u w_u (the `regression` proxy's model: ridge on
the mixture composition, scikit-learn) is fitted on the trained unions of the units at the plan's budget
and the units alone (free at one unit's budget: a one-unit mixture's truth is its member), each measured on
the fit windows only, never the held ones. The objective of the fitted law is then minimized on the capped
simplex with the merged route's own steps (simplex.py). Its limits, said plainly: a law linear in the
weights has its optimum at a vertex of the (capped) simplex, i.e. the best unit alone or the caps' corner,
so this route answers "which unit", not "which blend"; and it needs trained unions (n is the protocol's
budget), where the merged route needs none.
"""

from __future__ import annotations

import time

import numpy as np

from ablate.core.errors import UsageError
from ablate.optimize.objectives import Objective
from ablate.optimize.plan import Plan
from ablate.optimize.protocol import Route, split_windows
from ablate.optimize.simplex import mirror_step, project, sparsify
from ablate.optimize.trained import split_logppl, trained_mixtures, weight_vector
from ablate.scoring.proxies.regression import ridge

MIN_POINTS = 3


def fit_laws(points: list[tuple[list[float], dict[str, float]]], eval_names: list[str]) -> dict[str, tuple]:
    """{eval set: (intercept, slopes)} from [(weights over the units, {eval set: log ppl on fit windows})]."""
    if len(points) < MIN_POINTS:
        raise UsageError(f"the regression route needs {MIN_POINTS} or more trained mixtures of these units at this "
                         f"budget (units alone count at one unit's budget); it has {len(points)}")
    x = np.asarray([w for w, _ in points])
    laws = {}
    for s in eval_names:
        model = ridge().fit(x, np.asarray([v[s] for _, v in points]))  # the `regression` proxy's own model
        laws[s] = (float(model.intercept_), np.asarray(model.coef_, dtype=np.float64))
    return laws


def law_objective(laws: dict[str, tuple], objective: Objective, w, tokens: dict[str, int] | None = None) -> float:
    """The objective of the fitted law at weights w (relative to its uniform prediction where needed)."""
    w = np.asarray(w, dtype=np.float64)
    at = {s: b + float(beta @ w) for s, (b, beta) in laws.items()}
    reference = {s: b + float(beta.mean()) for s, (b, beta) in laws.items()} if objective.needs_reference else None
    return objective.value(at, reference, tokens)


def optimize_law(laws: dict[str, tuple], objective: Objective, n: int, caps: np.ndarray | None, steps: int,
                 lr: float, floor: float, tokens: dict[str, int] | None = None) -> dict:
    """Mirror descent on the fitted law's objective; returns weights and the law's predictions."""
    uniform = np.full(n, 1.0 / n)

    def predict(w):
        return {s: b + float(beta @ w) for s, (b, beta) in laws.items()}

    reference = predict(uniform) if objective.needs_reference else None
    w = project(uniform, caps)
    for step in range(steps):
        _, d_l = objective.value_and_slopes(predict(w), reference, tokens)
        grad = sum(d_l[s] * laws[s][1] for s in laws)
        w = mirror_step(w, grad, lr * (1 - step / steps), caps)
    w = sparsify(w, floor, caps)
    return {"weights": w.tolist(), "predicted": objective.value(predict(w), reference, tokens),
            "predicted_uniform": objective.value(predict(uniform), reference, tokens)}


def run(cfg, pool, study, plan: Plan, caps) -> dict:
    """Fit the law on the trained mixtures' fit-window values, optimize it; 'held' is the same law fitted on
    the held-window values (no window-level interval: the route sees mixtures, not windows)."""
    t0 = time.perf_counter()
    objective, units = plan.objective, plan.units
    split = split_windows(study, objective.eval_sets, cfg.optimize.fit_fraction, cfg.optimize.split_seed)
    metas = trained_mixtures(pool, study, plan)
    opt = cfg.optimize
    fits = {}
    for part in ("fit", "held"):  # the law fitted on each part's values: optimized on fit, reported on held
        points = [(weight_vector(m, units), split_logppl(pool, cfg, m["model_id"], split, study.device, part))
                  for m in metas]
        laws = fit_laws(points, objective.eval_sets)
        fits[part] = (laws, optimize_law(laws, objective, len(units), caps, opt.steps, opt.lr, opt.floor))
    weights = fits["fit"][1]["weights"]
    uniform = np.full(len(units), 1.0 / len(units))
    held_uniform = law_objective(fits["held"][0], objective, uniform)
    held_opt = law_objective(fits["held"][0], objective, weights)
    gain = held_uniform - held_opt
    # per eval set, the held law at both weights: what a --max-loss guard is checked on
    per_set = {s: {"optimized": b + float(beta @ np.asarray(weights)), "uniform": b + float(beta @ uniform)}
               for s, (b, beta) in fits["held"][0].items()}
    return {"units": units, "weights": weights, "raw_weights": weights, "history": [],
            "fit": {"optimized": fits["fit"][1]["predicted"], "uniform": fits["fit"][1]["predicted_uniform"]},
            "held": {"optimized": held_opt, "uniform": held_uniform, "gain": gain, "gain_low": None,
                     "gain_high": None, "resolved": bool(gain > 0), "per_set": per_set,
                     "guards_held": objective.guards_held({s: v["optimized"] for s, v in per_set.items()},
                                                          {s: v["uniform"] for s, v in per_set.items()})},
            "steps": opt.steps, "seconds": time.perf_counter() - t0, "in_memory": None,
            "trained_mixtures": [m["model_id"] for m in metas]}


def points(pool, study, plan: Plan) -> dict:
    """What the row's id also hashes for this route: its points are the pool's trained unions (more of them,
    another law)."""
    return {"points": [m["model_id"] for m in trained_mixtures(pool, study, plan)]}


ROUTE = Route("regression", "a law fitted on the trained unions", run, key=points)
