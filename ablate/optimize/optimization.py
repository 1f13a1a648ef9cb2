"""One optimization of mixture weights, planned, run and stored: what `ablate optimize` does before validation.

How to run (from Python; `ablate optimize` (ablate/cli/optimize.py) calls these in order):
    plan = plan_optimization(cfg, pool, ["quotes"], None, "mean", None, None, None)
    result = run_optimization(cfg, pool, plan)          # the row is in `optimizations` now
Validation trains, so it is one floor up: ablate/workflows/optimize_runs.py (validate_optimization).

The plan checks everything before any work (the objective, the units, the budget the weights are meant for
and its repetition caps, the route); the run is the merged route (optimize.merged_route, with the proxy's
own error on trained unions: optimize.trained.calibration_values), the ensemble route (the same with the
members' per-token mixture: optimize.ensemble_route) or the regression route (optimize.regression_route),
under an energy meter.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from ablate.core.energy import Meter
from ablate.core.errors import UsageError
from ablate.data.units import eval_sets, unit_ids, unit_meta
from ablate.optimize.ensemble_route import optimize_ensemble
from ablate.optimize.merged_route import optimize_merged
from ablate.optimize.objectives import parse_objective
from ablate.optimize.regression_route import regression_route
from ablate.optimize.simplex import repetition_caps
from ablate.optimize.trained import calibration_values
from ablate.store.results import now, write_optimization_row
from ablate.train.study import load_study, normalize_units


ROUTES = ("merged", "ensemble", "regression")


def plan_optimization(cfg, pool, target, target_weights, kind, max_loss, units, tokens, route: str = "merged") -> dict:
    """Everything checked before any work: the objective, the units, the budget and its caps, the route."""
    if route not in ROUTES:
        raise UsageError(f"--route must be one of {', '.join(ROUTES)}, not {route!r}")
    known = [ev["domain"] for ev in eval_sets(pool)]
    objective = parse_objective(target, known, kind=kind, target_weights=target_weights, max_loss=max_loss)
    chosen = normalize_units([u.strip() for u in units.split(",") if u.strip()]) if units else unit_ids(pool, required=True)
    if len(chosen) < 2:
        raise UsageError(f"optimizing weights needs 2 or more units (got {', '.join(chosen) or 'none'})")
    unit_tokens = [int(unit_meta(pool, u)["n_tokens"]) for u in chosen]
    if tokens is not None and tokens <= 0:
        raise UsageError(f"--tokens must be a positive number of tokens (got {tokens})")
    budget_tokens = tokens if tokens is not None else unit_tokens[0]  # equal-compute: one unit's tokens
    caps = repetition_caps(unit_tokens, budget_tokens, cfg.optimize.max_epochs)
    return {"objective": objective, "units": chosen, "unit_tokens": unit_tokens, "budget_tokens": budget_tokens,
            "budget": "unit" if tokens is None else f"tokens={tokens}", "tokens_option": tokens, "caps": caps,
            "route": route, "unions": None,  # unions: the regression route's training set (None: every one trained)
            "calibration": None}  # the unions the merged route's proxy error is measured on (None: every one)


def run_optimization(cfg, pool, plan: dict) -> dict:
    """The plan's route under an energy meter; the row stored in `optimizations`."""
    study = load_study(cfg, pool, plan["objective"].eval_sets)
    caps = plan["caps"] if np.any(plan["caps"] < 1) else None
    with Meter(cfg.energy) as meter:
        if plan["route"] in ("merged", "ensemble"):  # gradient routes: the same protocol, another proxy
            route = optimize_merged if plan["route"] == "merged" else optimize_ensemble
            result = route(study, plan["units"], plan["objective"], caps,
                           calibration=calibration_values(cfg, pool, study, plan))
        else:
            result = regression_route(cfg, pool, study, plan, caps)
    result.update(plan=plan, cost=meter.result, seed_id=study.seed["model_id"], settings=cfg.optimize.model_dump())
    result["row"] = optimization_row(result)
    write_optimization_row(pool, result["row"])
    return result


def optimization_row(result: dict) -> dict:
    plan, held = result["plan"], result["held"]
    weights = result["weights"]
    error = result.get("proxy_error")
    believed = error is None or held["gain"] > error["rms"]
    recommended = "optimized" if held["resolved"] and held["guards_held"] and believed else "uniform"
    key = json.dumps([result["seed_id"], plan["objective"].describe(), plan["units"], plan["budget"],
                      result["settings"]] + ([plan["route"], plan["unions"]] if plan["route"] != "merged" else []),
                     sort_keys=True)
    tokens = [round(w * plan["budget_tokens"]) for w in weights]
    return {"row_id": "opt-" + hashlib.sha256(key.encode()).hexdigest()[:16], "route": plan["route"],
            "objective": plan["objective"].describe(), "eval_sets": plan["objective"].eval_sets,
            "units": plan["units"], "weights": weights, "recommended": recommended, "budget": plan["budget"],
            "budget_tokens": plan["budget_tokens"], "tokens": tokens,
            "epochs": [t / n for t, n in zip(tokens, plan["unit_tokens"])], "max_epochs": result["settings"]["max_epochs"],
            "fit_optimized": result["fit"]["optimized"], "fit_uniform": result["fit"]["uniform"],
            "held_optimized": held["optimized"], "held_uniform": held["uniform"], "held_gain": held["gain"],
            "held_gain_low": held["gain_low"], "held_gain_high": held["gain_high"], "resolved": held["resolved"],
            "guards_held": held["guards_held"], "proxy_error": None if error is None else error["rms"],
            "proxy_error_unions": None if error is None else error["unions"], "steps": result["steps"],
            "settings": result["settings"],
            "seconds": result["seconds"], "energy_kwh": result["cost"].get("energy_kwh"),
            "co2_kg": result["cost"].get("co2_kg"), "energy_method": result["cost"].get("energy_method"),
            "seed_id": result["seed_id"], "validated": False, "created_at": now()}
