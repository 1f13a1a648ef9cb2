"""One optimization of mixture weights, planned, run and stored: what `ablate optimize` does before validation.

How to run (from Python; `ablate optimize` (ablate/cli/optimize.py) calls these in order):
    plan = plan_optimization(cfg, pool, ["quotes"], None, "mean", None, None, None)
    row = stored_optimization(pool, plan)                # a plain rerun: the stored row, its validation kept
    result = run_optimization(cfg, pool, plan)           # or computed; the row is in `optimizations` now
Validation trains, so it is one floor up: ablate/workflows/optimize_runs.py (validate_optimization).

The plan checks everything before any work (the objective, the units and their trained members, the budget
the weights are meant for and its repetition caps, the route) and names the row: its id hashes what
determines the result (seed, members, eval data, objective, units, budget, settings, route, the regression
route's points), so asking again finds the stored row instead of recomputing it. The plan is a typed value
(optimize/plan.py: Plan, its budget a WeightsBudget). The run is the plan's route from the registry
(optimize/routes.py: merged, ensemble, regression; each follows optimize/protocol.py), under an energy meter.
`optimization_row` decides what to recommend (protocol.gate: the optimized weights, the top candidate on the fit
windows, only when the held gain clears the guards, the bootstrap and the calibrated gate; the old gate's answer
is stored beside it) and stores both: the recommended weights, tokens and epochs, the optimized ones for
reference, and the candidates the route offered.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace

import numpy as np

from ablate.core.energy import Meter
from ablate.core.errors import UsageError
from ablate.core.formats import rel, rel_band
from ablate.data.units import eval_sets, unit_ids, unit_meta
from ablate.optimize.defaults import PARTNER_ROUTE, default_route
from ablate.optimize.objectives import parse_objective
from ablate.optimize.plan import Plan, WeightsBudget
from ablate.optimize.protocol import gate, old_gate
from ablate.optimize.routes import get as get_route
from ablate.optimize.simplex import repetition_caps
from ablate.store.results import now, read_optimization_row, write_optimization_row
from ablate.study.budgets import seed_known, target_kind
from ablate.study.context import load_study, normalize_units

# what --validate adds to a row: kept when the same optimization is computed again with the same weights
VALIDATION_COLUMNS = ("validated", "union_optimized", "union_uniform", "union_best", "union_best_mixture",
                      "union_best_weights", "unions_compared", "noise_threshold", "realized_gain", "beats_uniform",
                      "verdict", "validated_candidates")
# what a validation decided (the best retrained candidate, or uniform): kept with it, over the gate's guess
RECOMMENDATION_COLUMNS = ("recommended", "recommended_by", "weights", "tokens", "epochs")


def plan_optimization(cfg, pool, target, target_weights, kind, max_loss, units, tokens,
                      route: str | None = None) -> Plan:
    """Everything checked before any work: the objective, the units and their members, the budget and its caps,
    the route (None: the one for the targets' kind, defaults.default_route, with its partner route's top candidate
    at #2 of the shortlist); and the row's id, so a stored result can be found before anything is computed."""
    if route is not None:
        get_route(route)  # an unknown route: the usage error naming the registered ones
    known = [ev["domain"] for ev in eval_sets(pool)]
    objective = parse_objective(target, known, kind=kind, target_weights=target_weights, max_loss=max_loss)
    chosen = normalize_units([u.strip() for u in units.split(",") if u.strip()]) if units else unit_ids(pool, required=True)
    if len(chosen) < 2:
        raise UsageError(f"optimizing weights needs 2 or more units (got {', '.join(chosen) or 'none'})")
    metas = [unit_meta(pool, u) for u in chosen]
    unit_tokens = [int(m["n_tokens"]) for m in metas]
    if tokens is not None and tokens <= 0:
        raise UsageError(f"--tokens must be a positive number of tokens (got {tokens})")
    budget = WeightsBudget.of(unit_tokens, tokens)  # equal-compute by default: one unit's tokens
    caps = repetition_caps(unit_tokens, budget.tokens, cfg.optimize.max_epochs)
    # unions (the regression route's training set) and calibration (the proxy error's unions): None, every one
    domains = [m["domain"] for m in metas]
    partner = None
    if route is None:
        route = default_route([target_kind(t, domains, seed_known(cfg, objective.targets, pool))
                               for t in objective.targets])
        partner = PARTNER_ROUTE.get(route) if cfg.optimize.candidates > 1 else None
    plan = Plan(objective=objective, units=chosen, unit_tokens=unit_tokens, budget=budget, caps=caps, route=route,
                domains=domains, partner=partner)
    study = load_study(cfg, pool, objective.eval_sets)
    missing = [u for u in chosen if study.unit_member(u, required=False) is None]
    if missing:
        raise UsageError(missing_members(missing))
    return replace(plan, row_id=optimization_id(cfg, pool, study, plan))


def missing_members(units: list[str]) -> str:
    """Every unit without a member, one command each (the CLI adds the user's -c and --set to each)."""
    runs = " and ".join(f"`ablate train-partition {u}`" for u in units)
    if len(units) == 1:
        return f"unit {units[0]} has no trained member for this seed and recipe: run {runs}"
    return (f"{len(units)} units have no trained member for this seed and recipe ({', '.join(units)}): "
            f"run {runs} (one command per unit)")


def optimization_id(cfg, pool, study, plan: Plan) -> str:
    """The row's id: a hash of what determines the result, so the same question finds its stored answer (and
    its validation) and a different one (another recipe's members, eval data, setting) makes a new row. The key
    is the one rows have always been stored under (tests/optimize/test_plan.py pins it)."""
    key = {"seed": study.seed["model_id"], "objective": plan.objective.describe(), "units": plan.units,
           "budget": plan.budget.label, "settings": cfg.optimize.model_dump(), "route": plan.route,
           "unions": plan.unions, "calibration": plan.calibration,
           "members": [study.unit_member(u) for u in plan.units],
           "eval": {ev["domain"]: ev["data_sha256"] for ev in study.evals}, "seq_len": cfg.eval.seq_len,
           "precision": study.precision}
    key.update(get_route(plan.route).key(pool, study, plan))  # the regression route's points: another law
    if plan.partner:  # another shortlist (a key only where set: the rows stored before it keep their ids)
        key["partner"] = plan.partner
    return "opt-" + hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stored_optimization(pool, plan: Plan) -> dict | None:
    """The row of this very optimization, if one was computed before (with its validation, if any)."""
    return read_optimization_row(pool, plan.row_id)


def run_optimization(cfg, pool, plan: Plan) -> dict:
    """The plan's route under an energy meter; the row stored in `optimizations` (a validation of the same
    weights stored before is kept; one of other weights is kept under its own id, superseded)."""
    study = load_study(cfg, pool, plan.objective.eval_sets)
    caps = plan.caps if np.any(plan.caps < 1) else None
    with Meter(cfg.energy) as meter:
        partner = None
        if plan.partner and not plan.shortlist:  # the partner route's top candidate, held at #2 of the shortlist
            partner = get_route(plan.partner).run(cfg, pool, study, replace(plan, route=plan.partner, partner=None),
                                                  caps)
            plan = replace(plan, shortlist=partner_shortlist(plan.partner, partner["weights"]))
        result = get_route(plan.route).run(cfg, pool, study, plan, caps)
        if partner is not None:
            result["seconds"] += partner["seconds"]
    if plan.row_id is None:  # a plan built without plan_optimization (the fidelity protocol's)
        plan = replace(plan, row_id=optimization_id(cfg, pool, study, plan))
    if plan.domains is None:
        plan = replace(plan, domains=[unit_meta(pool, u)["domain"] for u in plan.units])
    result.update(plan=plan, cost=meter.result, seed_id=study.seed["model_id"], settings=cfg.optimize.model_dump())
    result["row"] = keep_validation(pool, read_optimization_row(pool, plan.row_id), optimization_row(result))
    write_optimization_row(pool, result["row"])
    return result


def partner_shortlist(partner: str, weights) -> tuple:
    """Plan.shortlist: the partner route's top candidate, named as the candidates table shows it."""
    return ((f"{partner} route's top", tuple(weights)),)


def keep_validation(pool, previous: dict | None, row: dict) -> dict:
    """Validation results are never lost: a recomputed row with the same weights keeps them; with other weights
    (members retrained in place), the previous row stays in the table under its own id, marked superseded."""
    if not previous or not previous.get("validated"):
        return row
    same = previous.get("optimized_weights") is not None and np.allclose(
        previous["optimized_weights"], row["optimized_weights"], atol=1e-12) and \
        previous.get("budget_tokens") == row["budget_tokens"]
    if same:
        kept = VALIDATION_COLUMNS + (RECOMMENDATION_COLUMNS if previous.get("recommended_by") == "validation" else ())
        return dict(row, **{c: previous.get(c) for c in kept})
    stamp = str(previous["created_at"]).replace(":", "").replace("-", "").replace("+", "").replace(".", "")
    write_optimization_row(pool, dict(previous, row_id=f"{previous['row_id']}~{stamp}", superseded_by=row["row_id"]))
    return row


def guard_report(objective, held: dict) -> dict:
    """{eval set: its --max-loss guard on the held windows}: the limit, the change vs uniform and how far past the
    limit it went, in % of perplexity (breach_pct 0 where the guard held)."""
    out = {}
    for name, pct in objective.guards:
        per = held.get("per_set", {}).get(name)
        if per is None:  # a route without per-set values: only whether all guards held
            out[name] = {"max_loss_pct": pct, "change_pct": None, "breach_pct": None, "held": held["guards_held"]}
            continue
        change = 100 * math.expm1(per["optimized"] - per["uniform"])
        out[name] = {"max_loss_pct": pct, "change_pct": change, "breach_pct": max(0.0, change - pct),
                     "held": change <= pct + 1e-9}
    return out


def integer_tokens(weights, budget: int) -> list[int]:
    """Each unit's tokens at the budget: integers summing exactly to it (largest remainder)."""
    w = np.asarray(weights, dtype=np.float64)
    raw = w / w.sum() * budget
    base = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - base), kind="stable")
    base[order[:int(budget - base.sum())]] += 1
    return [int(t) for t in base]


def by_domain(domains: list[str], values) -> dict:
    """{domain: the sum over its units}, in first-seen order (what Olmix/RegMix-style configs take)."""
    out: dict = {}
    for d, v in zip(domains, values):
        out[d] = out.get(d, 0) + v
    return out


def optimization_row(result: dict) -> dict:
    """The stored row: the recommendation decided here, and both weights: `weights`, `tokens`, `epochs` are what
    ablate recommends (uniform when it says uniform); `optimized_*` what the optimizer found, for reference (the
    top candidate, where the route offered several). The old gate's answer is kept beside the new one."""
    plan, held = result["plan"], result["held"]
    optimized = list(result["weights"])
    n = len(optimized)
    error = result.get("proxy_error")
    decided, before = gate(held, error), old_gate(held, error)
    passes = held["resolved"] and held["guards_held"]
    recommended = "optimized" if passes and decided["believed"] else "uniform"
    weights = optimized if recommended == "optimized" else [1.0 / n] * n
    tokens, opt_tokens = (integer_tokens(w, plan.budget.tokens) for w in (weights, optimized))
    return {"row_id": plan.row_id, "route": plan.route,
            "objective": plan.objective.describe(), "eval_sets": plan.objective.eval_sets,
            "units": plan.units, "domains": plan.domains, "recommended": recommended,
            "gate_recommended": recommended, "recommended_by": "gate",  # --validate may replace `recommended`
            "weights": weights, "tokens": tokens, "epochs": epochs(tokens, plan.unit_tokens),
            "optimized_weights": optimized, "optimized_tokens": opt_tokens,
            "optimized_epochs": epochs(opt_tokens, plan.unit_tokens),
            "budget": plan.budget.label, "budget_tokens": plan.budget.tokens,
            "max_epochs": result["settings"]["max_epochs"],
            "fit_optimized": result["fit"]["optimized"], "fit_uniform": result["fit"]["uniform"],
            "held_optimized": held["optimized"], "held_uniform": held["uniform"], "held_gain": held["gain"],
            "held_gain_low": held["gain_low"], "held_gain_high": held["gain_high"], "resolved": held["resolved"],
            "guards_held": held["guards_held"], "guards": guard_report(plan.objective, held),
            # the RMS only where it is an error estimate (MIN_ERROR_UNIONS or more unions); the rule that decided
            "proxy_error": decided["rms"], "proxy_error_unions": None if error is None else error["unions"],
            "gate_rule": decided["rule"], "gate_threshold": decided["threshold"],
            "calibrated_gain": decided.get("calibrated"), "calibration": decided.get("calibration"),
            "recommended_old": "optimized" if passes and before["believed"] else "uniform",
            "gate_rule_old": before["rule"], "gate_threshold_old": before["threshold"],
            "route_weights": result.get("route_weights"), "candidates": candidate_rows(result.get("candidates")),
            "validated_candidates": None, "steps": result["steps"],
            "settings": result["settings"],
            "seconds": result["seconds"], "energy_kwh": result["cost"].get("energy_kwh"),
            "co2_kg": result["cost"].get("co2_kg"), "energy_method": result["cost"].get("energy_method"),
            "seed_id": result["seed_id"], "validated": False, "superseded_by": None, "created_at": now()}


def candidate_rows(found: list[dict] | None) -> list[dict] | None:
    """The candidates as the row keeps them (optimize/candidates.py's, best on the fit windows first)."""
    if not found:
        return None
    return [{"rank": i + 1, "source": c["source"], "also": c.get("also", []), "weights": list(c["weights"]),
             "fit": c["fit"], "held_gain": c["held"]["gain"], "held_gain_low": c["held"]["gain_low"],
             "held_gain_high": c["held"]["gain_high"], "resolved": c["held"]["resolved"],
             "guards_held": c["held"]["guards_held"]} for i, c in enumerate(found)]


def epochs(tokens: list[int], unit_tokens: list[int]) -> list[float]:
    return [t / n for t, n in zip(tokens, unit_tokens)]


def realized_verdict(union_optimized: float, union_uniform: float, noise: float, who: str = "optimized") -> dict:
    """--validate's one verdict: does the retrained optimized union (`who`: or the best of K retrained candidates)
    beat the uniform one beyond the noise band (2 x the replicate's difference)? Gains and band in % of perplexity."""
    gain = union_uniform - union_optimized
    beats = bool(gain > noise)
    text = (f"{who} beats uniform beyond the noise band: {'yes' if beats else 'no'} "
            f"(gain {rel(gain)}, band {rel_band(noise)})")
    return {"realized_gain": gain, "beats_uniform": beats, "verdict": text}
