"""Optimize with validation: the weights proven by retraining (`ablate optimize --validate [K]`).

How to run: `ablate optimize` (ablate/cli/optimize.py) plans and runs (ablate/optimize/optimization.py), then:
    picks = validation_picks(result["row"], k=3)                  # the top 3 candidates (fit windows' order)
    realized = validate_optimization(cfg, pool, plan, result, k=3)   # trains K + 2 unions, rewrites the row

Validation is a ground truth, so it trains (train.loop.train_member): the weighted union at the budget
the weights are for (units with weight 0 left out; one unit left is that unit's own member), a second
data order of it (replicate 1: the noise band) and the uniform union of all the units. Every trained union
of a subset of these units at that budget (and, at one unit's budget, every unit's own member: the
equal-compute truth of a one-unit mixture) is then measured on the held windows the optimizer never saw,
with the objective's own definition, relative to the uniform union where it asks for a reference; the row
ends with one verdict: the optimized union beats the uniform one beyond the noise band (2 x the replicate's
difference), yes or no. With K above 1 the next K - 1 candidates (optimize/candidates.py, in the fit windows'
order) are trained too, and the verdict is about the best of the K retrained: it becomes the recommendation
(the row's weights, tokens and epochs, and the weights file) when it beats the uniform union beyond the noise
band; otherwise the uniform weights are. The retrained truth outranks the gate's guess: with K = 1 the optimized
weights are recommended exactly when they beat uniform once trained.
"""

from __future__ import annotations

from ablate.optimize.optimization import epochs, integer_tokens, realized_verdict
from ablate.optimize.plan import Plan
from ablate.optimize.protocol import predicted, split_windows
from ablate.optimize.trained import split_logppl, weights_of
from ablate.scoring.score import score_reference_models
from ablate.store.results import existing_rows, now, write_optimization_row, write_rows
from ablate.study.context import load_study
from ablate.train.loop import train_member


def validation_picks(row: dict, k: int) -> list[dict]:
    """The top k of the row's candidates ({"rank", "source", "weights"}; the first is the optimized weights); a row
    without candidates (the regression route, `--candidates 1`) offers its optimized weights alone."""
    found = row.get("candidates") or [{"rank": 1, "source": "optimized", "weights": row["optimized_weights"]}]
    return [{"rank": c["rank"], "source": c["source"], "weights": list(c["weights"])} for c in found[:max(1, k)]]


def validate_optimization(cfg, pool, plan: Plan, result: dict, k: int = 1, log=print) -> dict:
    """Train the top k candidates, a replicate of the first and the uniform union at the budget; measure every
    trained union of these units' budget on the held windows; rewrite the row with what was realized and what
    to train with (the best retrained candidate when it beats uniform beyond the noise band, else uniform)."""
    picks = validation_picks(result["row"], k)
    realized = realized_objectives(cfg, pool, plan, result, log=log,
                                   extra=[(plan.units, p["weights"]) for p in picks[1:]])
    values, ids, r = realized["values"], realized["ids"], realized["row"]
    trained = [ids["optimized"], *ids["extra"]]
    for pick, model_id in zip(picks, trained):
        gain = float(r["union_uniform"] - values[model_id])
        pick.update(union=model_id, realized_gain=gain, beats_uniform=bool(gain > r["noise_threshold"]))
    best = max(picks, key=lambda p: p["realized_gain"])
    if len(picks) == 1:
        r.update(realized_verdict(r["union_optimized"], r["union_uniform"], r["noise_threshold"]))
    else:
        who = f"the best of {len(picks)} retrained candidates (#{best['rank']}, {best['source']})"
        r.update(realized_verdict(values[best["union"]], r["union_uniform"], r["noise_threshold"], who=who))
    row = dict(result["row"])
    n = len(plan.units)
    weights = best["weights"] if best["beats_uniform"] else [1.0 / n] * n
    tokens = integer_tokens(weights, plan.budget.tokens)
    row.update(validated=True, created_at=now(), validated_candidates=picks, recommended_by="validation",
               recommended="optimized" if best["beats_uniform"] else "uniform", weights=list(weights),
               tokens=tokens, epochs=epochs(tokens, plan.unit_tokens), **r)
    write_optimization_row(pool, row)
    realized.update(row=row, picks=picks, best=best)
    return realized


def validation_cost(plan: Plan, k: int) -> str:
    """What --validate K will train, said before it starts."""
    tokens = plan.budget.tokens
    return (f"validating: {k + 2} trainings of {tokens:,} tokens each ({k} candidate{'s' if k > 1 else ''}, "
            f"a second data order of #1 for the noise band, the uniform union; ones the pool already has are reused)")


def train_weighted(cfg, pool, plan: Plan, units: list[str], weights: list[float], replicate: int = 0,
                   log=print) -> dict:
    """A weighted union at the plan's budget (units with weight 0 left out; one unit left: its own member)."""
    picked = [(u, w) for u, w in zip(units, weights) if w > 0]
    mix, w = [u for u, _ in picked], [x for _, x in picked]
    return train_member(cfg, pool, mix, weights=w if len(mix) > 1 else None, replicate=replicate, log=log,
                        **plan.budget.train_args())


def realized_objectives(cfg, pool, plan: Plan, result: dict, extra: list[tuple] = (), log=print) -> dict:
    """The three trainings (and `extra` (units, weights) picks), then every comparable trained union's
    objective on the held windows."""
    objective, units = plan.objective, plan.units
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
    value = {mid: objective.value(v, ref, {s: int(predicted(split[s], "held").sum()) for s in split})
             for mid, v in held.items()}
    originals = [m for m in candidates if m.get("replicate", 0) == 0]
    best = min(originals, key=lambda m: value[m["model_id"]])
    table = [{"union": "+".join(m["units"]) + (" (replicate)" if m.get("replicate") else ""),
              "weights": [round(x, 4) for x in weights_of(m)],
              "held_objective": round(value[m["model_id"]], 5)} for m in sorted(candidates, key=lambda m: value[m["model_id"]])]
    return {"table": table, "values": value, "best_id": best["model_id"],
            "ids": {"optimized": optimized["model_id"], "replicate": replicate["model_id"],
                    "uniform": uniform["model_id"], "extra": [m["model_id"] for m in extras]}, "row": {
        "union_optimized": value[optimized["model_id"]], "union_uniform": value[uniform["model_id"]],
        "union_best": value[best["model_id"]], "union_best_mixture": best["units"],
        "union_best_weights": weights_of(best),
        "unions_compared": len(originals),
        "noise_threshold": 2 * abs(value[optimized["model_id"]] - value[replicate["model_id"]])}}


def _comparable(pool, study, plan: Plan, trained: list[dict]) -> list[dict]:
    """Trained truths of subsets of the units at the plan's budget (+ unit members at one unit's budget)."""
    label = trained[-1]["budget"]  # the uniform union's: "unit" or "tokens=N" as its id has it
    found = {m["model_id"]: m for m in trained}
    for m in pool.iter_metas("union"):
        if m["seed_id"] == study.seed["model_id"] and set(m["units"]) <= set(plan.units) and \
                m.get("budget") == label:
            found.setdefault(m["model_id"], m)
    if plan.budget.per_unit:
        for u in plan.units:
            mid = study.unit_member(u)
            found.setdefault(mid, pool.read_meta(mid))
    return list(found.values())
