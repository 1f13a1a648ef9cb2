"""The trained unions the optimizer's routes read: which ones count at a plan's budget, their weights, and
their log ppl on one part (fit | held) of the eval windows.

How to run (from Python; the routes (ablate/optimize/routes.py) and the validation in ablate/workflows/ call these):
    metas = trained_mixtures(pool, study, plan)            # first-replicate unions at the plan's budget
    values = split_logppl(pool, cfg, metas[0]["model_id"], split, study.device, "fit")

Nothing here trains: the unions are what the pool already holds (training them is ablate/workflows/'s job).
"""

from __future__ import annotations

from dataclasses import replace

from ablate.core.weights import is_uniform
from ablate.models.model import load_member
from ablate.optimize.losses import window_nll
from ablate.optimize.plan import Plan
from ablate.optimize.protocol import predicted, split_windows
from ablate.store.index import recipe_id
from ablate.study.context import study_recipe_id


def trained_mixtures(pool, study, plan: Plan) -> list[dict]:
    """The regression route's points: first-replicate unions of the units at the plan's budget, trained with the
    study's own recipe (only the uniform unions of plan.unions when given: a fixed training set, whatever else the
    pool holds) and, at one unit's budget, the units alone. Another recipe's runs of as many tokens are not unions
    of this question: a short union (a smaller batch) or a polished merge (started from the merge, train.start)."""
    label = plan.budget.label if plan.budget.per_unit else None
    keep = None if plan.unions is None else {tuple(sorted(u)) for u in plan.unions}
    own = study_recipe_id(study.cfg)
    out = [m for m in pool.iter_metas("union") if m["seed_id"] == study.seed["model_id"]
           and m.get("replicate", 0) == 0 and set(m["units"]) <= set(plan.units)
           and ("recipe" not in m or recipe_id(m["recipe"]) == own)  # a sidecar from before recipes: the study's
           and (m.get("budget") == label or (label is None and str(m.get("budget")).startswith("tokens=")
                                              and m.get("budget_tokens") == plan.budget.tokens))
           and (keep is None or (tuple(m["units"]) in keep and is_uniform(weight_vector(m, m["units"]))))]
    if plan.budget.per_unit:
        out += [pool.read_meta(study.unit_member(u)) for u in plan.units]
    return sorted(out, key=lambda m: m["model_id"])


def calibration_values(cfg, pool, study, plan: Plan) -> dict | None:
    """Fit-window log ppl of the trained unions the proxy's error is measured on (optimize_merged's
    `calibration`): the uniform union of all the units (the reference) and every other first-replicate union
    of 2+ of them at the plan's budget (plan.calibration: only those uniform unions, the protocol's picks).
    None when the uniform union or every other one is missing: the gate then knows window noise only."""
    units = plan.units
    metas = [m for m in trained_mixtures(pool, study, replace(plan, unions=None)) if len(m["units"]) >= 2]
    keep = None if plan.calibration is None else {tuple(sorted(u)) for u in plan.calibration}
    uniform = [m for m in metas if m["units"] == units and is_uniform(weights_of(m))]
    others = [m for m in metas if m not in uniform
              and (keep is None or (tuple(m["units"]) in keep and is_uniform(weights_of(m))))]
    if not uniform or not others:
        return None
    split = split_windows(study, plan.objective.eval_sets, cfg.optimize.fit_fraction, cfg.optimize.split_seed)
    return {"uniform": split_logppl(pool, cfg, uniform[0]["model_id"], split, study.device, "fit"),
            "unions": [(weight_vector(m, units), split_logppl(pool, cfg, m["model_id"], split, study.device, "fit"))
                       for m in others]}


def weights_of(meta: dict) -> list[float]:
    """A trained member's weights over its own units (uniform when its sidecar has none)."""
    return meta.get("weights") or [1.0 / len(meta["units"])] * len(meta["units"])


def weight_vector(meta: dict, units: list[str]) -> list[float]:
    w = dict(zip(meta["units"], weights_of(meta)))
    return [w.get(u, 0.0) for u in units]


def split_logppl(pool, cfg, model_id: str, split: dict, device, part: str = "held") -> dict[str, float]:
    """A trained model's log ppl on one part (fit | held) of every eval set's windows."""
    model = load_member(pool, model_id, full_hash=cfg.verify_hash, device=device)
    return {s: float(window_nll(model, p[part], cfg.eval.batch_size, p[f"{part}_mask"]).sum()) / predicted(p, part).sum()
            for s, p in split.items()}
