"""The protocol's "Optimized mixtures, retrained": do merged-route weights beat uniform once trained?

How to run:
    ablate fidelity --weights-only                  # every configs/fidelity/*.yaml; FIDELITY.md's section
    ablate fidelity configs/fidelity/six-units.yaml --weights-only --out /tmp/F.md

Per study (its members and its equal-compute truths built as for the rest of the protocol, budget `unit`
only), for each eval set alone and for the mean over all of them:
1. the merged route optimizes weights on the fit windows (no union trained: `ablate optimize`), and the
   ensemble route the same with the members' per-token mixture (`ablate optimize --route ensemble`);
2. the regression route (a law linear in the weights, fitted on n unions picked by `suggest-unions` and the
   units alone, on their fit-window values) and the grid search's top pick for the same objective (`ablate search --weights-grid 1,2`, every mixture of
   the units, merged proxy) is the alternative at about the same cost (one proxy pass, one training);
3. all four are trained at one unit's budget, with the uniform union of all units and a replicate of the
   optimized union (the noise band), and every trained union of the study (weighted ones included) is
   measured on the held windows the optimizer never saw.
4. what a user following `ablate optimize` (no --route: the route for the kind of target) would train: the
   default route's recommendation (K = 0), and the best of its top 1 and 3 candidates retrained (`--validate K`;
   where no unit covers the target the ensemble route leads, the merged route's top candidate held at #2).
Reported: realized gain over the uniform union, regret against the best union trained for the study, the
share of the best known gain over uniform that the weights captured, the same for the grid pick, and the
noise band. Rendering is ablate/fidelity/weights_report.py's.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ablate.core.config import StudyConfig
from ablate.data.units import eval_sets, unit_ids, unit_meta
from ablate.fidelity.calibrate import plan_unions
from ablate.optimize import search
from ablate.optimize.defaults import PARTNER_ROUTE, default_route
from ablate.optimize.objectives import Objective
from ablate.optimize.optimization import partner_shortlist, run_optimization
from ablate.optimize.plan import Plan, WeightsBudget
from ablate.optimize.simplex import repetition_caps
from ablate.store.pool import Pool
from ablate.study.budgets import seed_known, target_kind
from ablate.workflows.optimize_runs import realized_objectives

GRID = [1.0, 2.0]
VALIDATE = (1, 3)  # the `--validate K` rows beside K = 0 (the gate's recommendation, nothing retrained)


def study_objectives(pool: Pool, cfg: StudyConfig, targets: str = "all") -> list[Objective]:
    """The sets no unit covers alone (seed-known first, then new to the seed: where the proxies differ), the mean
    over all sets, then (targets = "all") each covered set alone; that order, so a run cut short has what matters
    first."""
    names = [ev["domain"] for ev in eval_sets(pool)]
    known = seed_known(cfg, names, pool)
    kind = {n: target_kind(n, cfg.units.domains, known) for n in names}
    first = [Objective("mean", (n,)) for target in ("seed-known", "eval-only") for n in names if kind[n] == target]
    first += [Objective("mean", tuple(names))]
    return first + ([Objective("mean", (n,)) for n in names if kind[n] == "covered"] if targets == "all" else [])


def optimized_mixtures(cfg: StudyConfig, log=print, targets: str = "all") -> dict:
    """Every objective of one study (`targets`: "all", or "eval-only": its eval-only sets and the mean):
    optimize, pick by grid, train, measure on held windows."""
    pool = Pool(cfg.pool)
    units = unit_ids(pool, required=True)
    unit_tokens = [int(unit_meta(pool, u)["n_tokens"]) for u in units]
    budget = WeightsBudget.of(unit_tokens, None)  # one unit's tokens: the protocol's equal compute
    caps = repetition_caps(unit_tokens, budget.tokens, cfg.optimize.max_epochs)
    cases = []
    for objective in study_objectives(pool, cfg, targets):
        plan = Plan(objective=objective, units=units, unit_tokens=unit_tokens, budget=budget, caps=caps, route="merged",
                    # the proxy-error gate sees the same n unions the regression route is fitted on
                    calibration=plan_unions(units, [], len(units)))
        cases.append(one_case(cfg, pool, plan, log))
        log(f"{cfg.name} {objective.describe()}: optimized {cases[-1]['realized_gain']:+.4f}, grid pick "
            f"{cases[-1]['grid_gain']:+.4f} over uniform (best known {cases[-1]['best_gain']:+.4f})")
    return {"study": cfg.name, "units": units, "targets": targets, "cases": cases}


def objective_kind(objective: Objective, cfg: StudyConfig) -> str:
    """The kind of target (study.budgets.target_kind) of a one-eval-set objective, or `mean` for several."""
    if len(objective.targets) > 1:
        return "mean"
    name = objective.targets[0]
    return target_kind(name, cfg.units.domains, seed_known(cfg, [name], Pool(cfg.pool)))


def one_case(cfg: StudyConfig, pool: Pool, plan: Plan, log) -> dict:
    objective = plan.objective
    result = run_optimization(cfg, pool, plan)
    # the regression route at the protocol's calibration budget: n unions (suggest-unions' picks) + units alone
    regression_plan = replace(plan, route="regression", unions=plan.calibration)
    regression = run_optimization(cfg, pool, regression_plan)
    # the ensemble route: the same protocol with the members' per-token mixture as the proxy, same gate unions;
    # where `optimize` takes it by default (no unit covers the target) with the merged route's top held at #2
    kind = objective_kind(objective, cfg)
    lead = default_route([kind])
    partner = PARTNER_ROUTE.get(lead)
    shortlist = partner_shortlist(partner, result["weights"]) if partner else ()
    ensemble = run_optimization(cfg, pool, replace(plan, route="ensemble", partner=partner, shortlist=shortlist))
    t0 = time.perf_counter()
    ranking = search.rank(cfg, pool, objective, max_size=len(plan.units), grid=GRID, method="merged",
                          truth="unit", log=lambda *a: None)
    (grid_mix, grid_w), _ = ranking["ranked"][0]
    grid_s = time.perf_counter() - t0
    # what `--validate 3` adds: the default route's candidates #2 and #3 (#1 is its optimized weights)
    followed_route = ensemble if lead == "ensemble" else result
    picks = [c["weights"] for c in (followed_route.get("candidates") or [])[1:max(VALIDATE)]]
    realized = realized_objectives(cfg, pool, plan, result, log=log,
                                   extra=[(list(grid_mix), list(grid_w)), (plan.units, regression["weights"]),
                                          (plan.units, ensemble["weights"]), *((plan.units, w) for w in picks)])
    values, ids = realized["values"], realized["ids"]
    uniform, best = values[ids["uniform"]], values[realized["best_id"]]
    optimized, grid, reg = (values[ids["optimized"]], values[ids["extra"][0]], values[ids["extra"][1]])
    ens = values[ids["extra"][2]]
    best_gain = uniform - best
    first = uniform - (ens if lead == "ensemble" else optimized)
    followed = validated([first, *(uniform - values[i] for i in ids["extra"][3:])],
                         realized["row"]["noise_threshold"], best_gain)
    merged_recommended = uniform - optimized if result["row"]["recommended"] == "optimized" else 0.0
    ensemble_recommended = uniform - ens if ensemble["row"]["recommended"] == "optimized" else 0.0
    return {**followed, "objective": objective.describe(), "target": kind, "route": lead,
            "weights": dict(zip(plan.units, result["weights"])),
            "ensemble_weights": dict(zip(plan.units, ensemble["weights"])),
            "ensemble_recommended": ensemble["row"]["recommended"], "ensemble_gain": uniform - ens,
            "ensemble_regret": ens - best, "ensemble_captured": (uniform - ens) / best_gain if best_gain > 0 else None,
            "ensemble_recommended_gain": ensemble_recommended,
            "ensemble_proxy_error": ensemble["row"]["proxy_error"],
            "recommended": (ensemble if lead == "ensemble" else result)["row"]["recommended"],
            "merged_recommended": result["row"]["recommended"], "held_predicted_gain": result["held"]["gain"],
            "held_resolved": result["held"]["resolved"], "proxy_error": result["row"]["proxy_error"],
            "grid_pick": {"mixture": list(grid_mix), "weights": list(grid_w)},
            "regression_weights": dict(zip(plan.units, regression["weights"])),
            "regression_gain": uniform - reg, "regression_regret": reg - best,
            "regression_captured": (uniform - reg) / best_gain if best_gain > 0 else None,
            "realized_gain": uniform - optimized,
            # what a user who follows the recommendation of `optimize`'s default route trains: the uniform weights
            # when its gate said uniform, so its realized gain is then 0 by construction
            "recommended_gain": ensemble_recommended if lead == "ensemble" else merged_recommended,
            "merged_recommended_gain": merged_recommended,
            "grid_gain": uniform - grid, "best_gain": best_gain,
            "regret": optimized - best, "grid_regret": grid - best,
            "captured": (uniform - optimized) / best_gain if best_gain > 0 else None,
            "grid_captured": (uniform - grid) / best_gain if best_gain > 0 else None,
            "noise": abs(optimized - values[ids["replicate"]]), "unions_compared": realized["row"]["unions_compared"],
            "optimize_s": result["seconds"], "grid_s": grid_s}


def validated(gains: list[float], threshold: float, best_gain: float) -> dict:
    """What `ablate optimize --validate K` recommends, for each K in VALIDATE: the best of the top K candidates'
    realized gains (`gains`, in candidate order) when it beats the uniform union beyond the noise threshold (2 x
    the band, as optimize_runs.validate_optimization judges), else the uniform union (gain 0); and its share of the
    best known gain."""
    out = {}
    for k in VALIDATE:
        best = max(gains[:k])
        gain = best if best > threshold else 0.0
        out[f"validate{k}_gain"] = gain
        out[f"validate{k}_captured"] = gain / best_gain if best_gain > 0 else None
        out[f"validate{k}_trained"] = len(gains[:k])
    return out
