"""The plan of one optimization is a frozen, typed value with one budget, and its row id hashes exactly the key rows
have always been stored under (a stored optimization is found again after the plan stopped being a dict)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from ablate.optimize.optimization import optimization_id, plan_optimization
from ablate.optimize.plan import Plan, WeightsBudget
from ablate.study.context import load_study


def _old_id(cfg, pool, study, plan_dict: dict) -> str:
    """The id as it was computed while the plan was a dict (ablate 759e6a2, optimization.optimization_id)."""
    key = {"seed": study.seed["model_id"], "objective": plan_dict["objective"].describe(), "units": plan_dict["units"],
           "budget": plan_dict["budget"], "settings": cfg.optimize.model_dump(), "route": plan_dict["route"],
           "unions": plan_dict["unions"], "calibration": plan_dict["calibration"],
           "members": [study.unit_member(u) for u in plan_dict["units"]],
           "eval": {ev["domain"]: ev["data_sha256"] for ev in study.evals}, "seq_len": cfg.eval.seq_len,
           "precision": study.precision}
    if plan_dict["route"] == "regression":  # its points: first-replicate unions at one unit's budget + the units
        units = plan_dict["units"]
        key["points"] = sorted([m["model_id"] for m in pool.iter_metas("union")
                                if m["seed_id"] == study.seed["model_id"] and m.get("replicate", 0) == 0
                                and set(m["units"]) <= set(units) and m.get("budget") == "unit"]
                               + [study.unit_member(u) for u in units])
    return "opt-" + hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_one_budget_gives_the_label_the_tokens_and_the_training_arguments():
    unit = WeightsBudget.of([4096, 5000], None)
    assert (unit.tokens, unit.label, unit.option, unit.train_args()) == (4096, "unit", None, {"budget": "unit"})
    given = WeightsBudget.of([4096, 5000], 4096)  # the same tokens, asked for by --tokens: another budget
    assert (given.tokens, given.label, given.option, given.train_args()) == (4096, "tokens=4096", 4096,
                                                                             {"tokens": 4096})


@pytest.mark.parametrize("tokens,route", [(None, "merged"), (3 * 4096, "ensemble"), (None, "regression")])
def test_the_plan_is_frozen_and_its_id_is_the_dict_era_id(study, tokens, route):
    cfg, pool, units, _ = study
    plan = plan_optimization(cfg, pool, ["literature"], None, "mean", None, None, tokens, route)
    assert isinstance(plan, Plan) and plan.units == units and plan.budget == WeightsBudget.of(plan.unit_tokens, tokens)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.route = "merged"
    st = load_study(cfg, pool, plan.objective.eval_sets)
    as_dict = {"objective": plan.objective, "units": plan.units, "route": route, "unions": None, "calibration": None,
               "budget": "unit" if tokens is None else f"tokens={tokens}"}
    assert plan.row_id == _old_id(cfg, pool, st, as_dict)
    # a variant is a replace; the fidelity protocol's (calibration unions, no row id yet) hashes as it did
    picks = [("fortunes-00", "literature-00")]
    variant = dataclasses.replace(plan, calibration=picks, row_id=None)
    assert variant.route == plan.route and plan.calibration is None and variant.row_id is None
    assert optimization_id(cfg, pool, st, variant) == _old_id(cfg, pool, st, dict(as_dict, calibration=picks))
