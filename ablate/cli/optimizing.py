"""The optimize pipeline: plan (objective, units, budget, caps), run the merged route, store, validate.

How to run: `ablate optimize` (ablate/cli/optimize.py) calls these in order:
    plan = plan_optimization(cfg, pool, ["quotes"], None, "mean", None, None, None)
    result = run_optimization(cfg, pool, plan)          # the row is in `optimizations` now
    realized = validate_optimization(cfg, pool, plan, result)   # trains 3 unions, rewrites the row

Validation is a ground truth, so it trains (train.loop.train_member): the weighted union at the budget
the weights are for (units with weight 0 left out; one unit left is that unit's own member), a second
data order of it (replicate 1: the noise band) and the uniform union of all the units. Every trained union
of a subset of these units at that budget (and, at one unit's budget, every unit's own member: the
equal-compute truth of a one-unit mixture) is then measured on the held windows the optimizer never saw,
with the objective's own definition, relative to the uniform union where it asks for a reference.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from ablate.core.energy import Meter
from ablate.core.errors import UsageError
from ablate.core.weights import is_uniform
from ablate.data.units import eval_sets, unit_ids, unit_meta
from ablate.models.model import load_member
from ablate.optimize.gradient import window_nll
from ablate.optimize.merged_route import optimize_merged, split_windows
from ablate.optimize.objectives import parse_objective
from ablate.optimize.regression_route import fit_laws, law_objective, optimize_law
from ablate.optimize.simplex import repetition_caps
from ablate.scoring.score import score_reference_models
from ablate.store.results import existing_rows, now, write_optimization_row, write_rows
from ablate.train.loop import train_member
from ablate.train.study import load_study, normalize_units


ROUTES = ("merged", "regression")


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
        if plan["route"] == "merged":
            result = optimize_merged(study, plan["units"], plan["objective"], caps,
                                     calibration=calibration_values(cfg, pool, study, plan))
        else:
            result = regression_route(cfg, pool, study, plan, caps)
    result.update(plan=plan, cost=meter.result, seed_id=study.seed["model_id"], settings=cfg.optimize.model_dump())
    result["row"] = optimization_row(result)
    _store(pool, result["row"])
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


def regression_route(cfg, pool, study, plan: dict, caps) -> dict:
    """Fit the law on the trained mixtures' fit-window values, optimize it; 'held' is the same law fitted on
    the held-window values (no window-level interval: the route sees mixtures, not windows)."""
    t0 = time.perf_counter()
    objective, units = plan["objective"], plan["units"]
    split = split_windows(study, objective.eval_sets, cfg.optimize.fit_fraction, cfg.optimize.split_seed)
    metas = trained_mixtures(pool, study, plan)
    opt = cfg.optimize
    fits = {}
    for part in ("fit", "held"):  # the law fitted on each part's values: optimized on fit, reported on held
        points = [(_weight_vector(m, units), split_logppl(pool, cfg, m["model_id"], split, study.device, part))
                  for m in metas]
        laws = fit_laws(points, objective.eval_sets)
        fits[part] = (laws, optimize_law(laws, objective, len(units), caps, opt.steps, opt.lr, opt.floor))
    weights = fits["fit"][1]["weights"]
    held_uniform = law_objective(fits["held"][0], objective, np.full(len(units), 1.0 / len(units)))
    held_opt = law_objective(fits["held"][0], objective, weights)
    gain = held_uniform - held_opt
    return {"units": units, "weights": weights, "raw_weights": weights, "history": [],
            "fit": {"optimized": fits["fit"][1]["predicted"], "uniform": fits["fit"][1]["predicted_uniform"]},
            "held": {"optimized": held_opt, "uniform": held_uniform, "gain": gain, "gain_low": None,
                     "gain_high": None, "resolved": bool(gain > 0), "per_set": {}, "guards_held": True},
            "steps": opt.steps, "seconds": time.perf_counter() - t0, "in_memory": None,
            "trained_mixtures": [m["model_id"] for m in metas]}


def trained_mixtures(pool, study, plan: dict) -> list[dict]:
    """The regression route's points: first-replicate unions of the units at the plan's budget (only the
    uniform unions of plan["unions"] when given: a fixed training set, whatever else the pool holds) and, at
    one unit's budget, the units alone."""
    label = plan["budget"] if plan["tokens_option"] is None else None
    keep = None if plan["unions"] is None else {tuple(sorted(u)) for u in plan["unions"]}
    out = [m for m in pool.iter_metas("union") if m["seed_id"] == study.seed["model_id"]
           and m.get("replicate", 0) == 0 and set(m["units"]) <= set(plan["units"])
           and (m.get("budget") == label or (label is None and str(m.get("budget")).startswith("tokens=")
                                              and m.get("budget_tokens") == plan["budget_tokens"]))
           and (keep is None or (tuple(m["units"]) in keep and is_uniform(_weight_vector(m, m["units"]))))]
    if plan["tokens_option"] is None:
        out += [pool.read_meta(study.unit_member(u)) for u in plan["units"]]
    return sorted(out, key=lambda m: m["model_id"])


def calibration_values(cfg, pool, study, plan: dict) -> dict | None:
    """Fit-window log ppl of the trained unions the proxy's error is measured on (optimize_merged's
    `calibration`): the uniform union of all the units (the reference) and every other first-replicate union
    of 2+ of them at the plan's budget (plan["calibration"]: only those uniform unions, the protocol's picks).
    None when the uniform union or every other one is missing: the gate then knows window noise only."""
    units = plan["units"]
    metas = [m for m in trained_mixtures(pool, study, dict(plan, unions=None)) if len(m["units"]) >= 2]
    keep = None if plan.get("calibration") is None else {tuple(sorted(u)) for u in plan["calibration"]}
    uniform = [m for m in metas if m["units"] == units and is_uniform(_weights_of(m))]
    others = [m for m in metas if m not in uniform
              and (keep is None or (tuple(m["units"]) in keep and is_uniform(_weights_of(m))))]
    if not uniform or not others:
        return None
    split = split_windows(study, plan["objective"].eval_sets, cfg.optimize.fit_fraction, cfg.optimize.split_seed)
    return {"uniform": split_logppl(pool, cfg, uniform[0]["model_id"], split, study.device, "fit"),
            "unions": [(_weight_vector(m, units), split_logppl(pool, cfg, m["model_id"], split, study.device, "fit"))
                       for m in others]}


def _weights_of(meta: dict) -> list[float]:
    """A trained member's weights over its own units (uniform when its sidecar has none)."""
    return meta.get("weights") or [1.0 / len(meta["units"])] * len(meta["units"])


def _weight_vector(meta: dict, units: list[str]) -> list[float]:
    w = dict(zip(meta["units"], _weights_of(meta)))
    return [w.get(u, 0.0) for u in units]


def _store(pool, row: dict) -> None:
    write_optimization_row(pool, row)


def validate_optimization(cfg, pool, plan: dict, result: dict) -> dict:
    """Train the weighted union, the uniform union and a replicate of the weighted one at the budget; measure
    every trained union of these units' budget on the held windows; rewrite the row with what was realized."""
    realized = realized_objectives(cfg, pool, plan, result)
    row = dict(result["row"])
    row.update(validated=True, created_at=now(), **realized["row"])
    _store(pool, row)
    return realized


def train_weighted(cfg, pool, plan: dict, units: list[str], weights: list[float], replicate: int = 0,
                   log=print) -> dict:
    """A weighted union at the plan's budget (units with weight 0 left out; one unit left: its own member)."""
    budget = {"budget": "unit"} if plan["tokens_option"] is None else {"tokens": plan["tokens_option"]}
    picked = [(u, w) for u, w in zip(units, weights) if w > 0]
    mix, w = [u for u, _ in picked], [x for _, x in picked]
    return train_member(cfg, pool, mix, weights=w if len(mix) > 1 else None, replicate=replicate, log=log, **budget)


def realized_objectives(cfg, pool, plan: dict, result: dict, extra: list[tuple] = (), log=print) -> dict:
    """The three trainings (and `extra` (units, weights) picks), then every comparable trained union's
    objective on the held windows."""
    objective, units = plan["objective"], plan["units"]
    optimized = train_weighted(cfg, pool, plan, units, result["weights"], log=log)
    replicate = train_weighted(cfg, pool, plan, units, result["weights"], replicate=1, log=log)
    uniform = train_weighted(cfg, pool, plan, units, [1.0] * len(units), log=log)
    extras = [train_weighted(cfg, pool, plan, u, w, log=log) for u, w in extra]
    study = load_study(cfg, pool, objective.eval_sets)
    write_rows(pool, score_reference_models(study, [m["units"] for m in (optimized, uniform, *extras)],
                                            existing_rows(pool, study.precision)))
    candidates = _comparable(pool, study, plan, [optimized, replicate, *extras, uniform])
    split = split_windows(study, objective.eval_sets, cfg.optimize.fit_fraction, cfg.optimize.split_seed)
    held = {m["model_id"]: split_logppl(pool, cfg, m["model_id"], split, study.device) for m in candidates}
    ref = held[uniform["model_id"]]
    value = {mid: objective.value(v, ref, {s: int(split[s]["held"].numel()) for s in split}) for mid, v in held.items()}
    originals = [m for m in candidates if m.get("replicate", 0) == 0]
    best = min(originals, key=lambda m: value[m["model_id"]])
    table = [{"union": "+".join(m["units"]) + (" (replicate)" if m.get("replicate") else ""),
              "weights": [round(x, 4) for x in _weights_of(m)],
              "held_objective": round(value[m["model_id"]], 5)} for m in sorted(candidates, key=lambda m: value[m["model_id"]])]
    return {"table": table, "values": value, "best_id": best["model_id"],
            "ids": {"optimized": optimized["model_id"], "replicate": replicate["model_id"],
                    "uniform": uniform["model_id"], "extra": [m["model_id"] for m in extras]}, "row": {
        "union_optimized": value[optimized["model_id"]], "union_uniform": value[uniform["model_id"]],
        "union_best": value[best["model_id"]], "union_best_mixture": best["units"],
        "union_best_weights": _weights_of(best),
        "unions_compared": len(originals),
        "noise_threshold": 2 * abs(value[optimized["model_id"]] - value[replicate["model_id"]])}}


def _comparable(pool, study, plan: dict, trained: list[dict]) -> list[dict]:
    """Trained truths of subsets of the units at the plan's budget (+ unit members at one unit's budget)."""
    label = trained[-1]["budget"]  # the uniform union's: "unit" or "tokens=N" as its id has it
    found = {m["model_id"]: m for m in trained}
    for m in pool.iter_metas("union"):
        if m["seed_id"] == study.seed["model_id"] and set(m["units"]) <= set(plan["units"]) and \
                m.get("budget") == label:
            found.setdefault(m["model_id"], m)
    if plan["tokens_option"] is None:
        for u in plan["units"]:
            mid = study.unit_member(u)
            found.setdefault(mid, pool.read_meta(mid))
    return list(found.values())


def split_logppl(pool, cfg, model_id: str, split: dict, device, part: str = "held") -> dict[str, float]:
    """A trained model's log ppl on one part (fit | held) of every eval set's windows."""
    model = load_member(pool, model_id, full_hash=cfg.verify_hash, device=device)
    return {s: float(window_nll(model, p[part], cfg.eval.batch_size).sum()) / (p[part].size(0) * (p[part].size(1) - 1))
            for s, p in split.items()}
