"""Candidates, not one point (issue 39.2), the gate that asks for the proxy's order (39.3), a walk that does not
climb back up: the lattice, the corners within the caps, the distinct ranked candidates of both gradient routes on
the tiny real study, and the calibrated gate against the old one."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from ablate.optimize.candidates import MIN_DISTANCE, distinct, feasible, hold_second, lattice, lattice_count
from ablate.optimize.defaults import default_route
from ablate.optimize.ensemble_route import TokenSpace, optimize_ensemble
from ablate.optimize.merged_route import optimize_merged
from ablate.optimize.objectives import parse_objective
from ablate.optimize.optimization import plan_optimization, run_optimization
from ablate.optimize.protocol import MIN_ERROR_UNIONS, PRIOR_GAIN, calibrate, climbs, gate, old_gate, split_windows
from ablate.study.context import load_study

UNITS = ["fortunes-00", "fortunes-01", "literature-00", "literature-01"]


def test_the_lattice_is_the_finest_that_fits():
    eighths = lattice(8, 8000)  # 1/8 over 8 units: every vector, 6,435 of them
    assert eighths.shape == (lattice_count(8, 8), 8) == (6435, 8)
    assert np.allclose(eighths.sum(1), 1) and np.allclose(eighths * 8, np.round(eighths * 8))
    assert len(np.unique(eighths, axis=0)) == len(eighths)
    quarters = lattice(16, 8000)  # 1/8 over 16 units would be 490,314: quarters instead
    assert quarters.shape == (3876, 16) and np.allclose(quarters * 4, np.round(quarters * 4))
    assert lattice(4, 40).shape == (35, 4) and lattice(64, 40).shape == (64, 64)  # corners alone beyond


def test_a_corner_respects_the_repetition_cap():
    caps = np.array([0.5, 0.5, 2.0, 2.0])
    capped = feasible(np.array([1.0, 0, 0, 0]), caps)
    assert capped[0] == pytest.approx(0.5) and capped.sum() == pytest.approx(1) and (capped <= caps + 1e-9).all()
    assert feasible(np.array([0, 0, 1.0, 0]), caps).tolist() == [0, 0, 1, 0]  # within its cap: itself


def test_near_duplicates_are_one_candidate():
    ranked = [{"weights": np.array([0.5, 0.5]), "source": "a", "fit": 1.0},
              {"weights": np.array([0.51, 0.49]), "source": "b", "fit": 1.1},
              {"weights": np.array([0.6, 0.4]), "source": "c", "fit": 1.2}]
    kept = distinct(ranked)
    assert [c["source"] for c in kept] == ["a", "c"] and kept[0]["also"] == ["b"]
    assert MIN_DISTANCE == 0.05


def _check(result, caps=None):
    found = result["candidates"]
    assert 2 <= len(found) <= 5
    fits = [c["fit"] for c in found]
    assert fits == sorted(fits)  # ranked on the fit windows
    assert result["weights"] == found[0]["weights"] and result["held"] == found[0]["held"]
    assert result["fit"]["optimized"] == fits[0] <= result["fit"]["uniform"]
    for i, a in enumerate(found):
        w = np.asarray(a["weights"])
        assert w.sum() == pytest.approx(1) and (w >= 0).all()
        assert a["held"]["gain_low"] <= a["held"]["gain"] <= a["held"]["gain_high"]  # each measured on held
        for b in found[i + 1:]:
            assert np.abs(w - np.asarray(b["weights"])).sum() >= MIN_DISTANCE
    return found


def test_the_ensemble_route_offers_distinct_ranked_candidates(study_copy):
    """Literature: the candidates are literature mixtures, the route's optimum among them (or a better twin); one
    lattice pass scores the same as point by point; --candidates 1 is the single point it always was."""
    cfg, pool, _, _ = study_copy
    st = load_study(cfg, pool, ["literature"])
    objective = parse_objective(["literature"], ["fortunes", "literature"])
    result = optimize_ensemble(st, UNITS, objective, None)
    found = _check(result)
    optimum = np.asarray(result["route_weights"])
    assert any(np.abs(np.asarray(c["weights"]) - optimum).sum() < MIN_DISTANCE for c in found)
    assert all(sum(c["weights"][2:]) > 0.99 for c in found[:3]), found  # literature's own units
    split = split_windows(st, ["literature"], cfg.optimize.fit_fraction, cfg.optimize.split_seed)
    space = TokenSpace(st, [st.unit_member(u) for u in UNITS], split)
    grid = lattice(4, 8000)
    many = space.many(grid)
    assert [m["literature"] for m in many] == pytest.approx([space.values(w)["literature"] for w in grid], abs=1e-9)

    cfg.optimize.candidates = 1
    single = optimize_ensemble(load_study(cfg, pool, ["literature"]), UNITS, objective, None)
    assert single["candidates"] is None and single["weights"] == single["route_weights"] == result["route_weights"]


def test_the_merged_route_offers_candidates_and_its_walk_never_climbs(study):
    """The merged route on the mean of both sets (where the walk zig-zagged: 19 climbs in 40 steps before the step
    was taken back on a climb): candidates ranked on the fit windows, and a walk that never goes back up."""
    cfg, pool, _, _ = study
    cfg = cfg.model_copy(deep=True)
    objective = parse_objective(["fortunes,literature"], ["fortunes", "literature"])
    result = optimize_merged(load_study(cfg, pool, objective.eval_sets), UNITS, objective, None)
    _check(result)
    assert climbs(result["history"]) == 0 and len(result["history"]) == cfg.optimize.steps + 1
    walk = [h["objective"] for h in result["history"] if h["accepted"]]
    assert walk[-1] < walk[0]


def _error(predicted, realized):
    p, r = np.asarray(predicted, float), np.asarray(realized, float)
    return {"unions": len(p), "predicted": p.tolist(), "realized": r.tolist(),
            "rms": float(np.sqrt(np.mean((r - p) ** 2)))}


def test_the_gate_believes_a_proxy_that_orders_right_whatever_its_scale():
    """A proxy that doubles every gain (the merged proxy's habit) but orders the unions right: the old gate calls its
    error too large and says uniform; the calibrated one believes the held gain. A proxy whose gains go the wrong way
    is never believed; below 3 unions the protocol's rate decides."""
    predicted = [0.02, 0.06, 0.10, 0.14]
    realized = [0.5 * x + e for x, e in zip(predicted, [0.001, -0.001, 0.0005, -0.0005])]
    held = {"gain": 0.04, "gain_low": 0.02}
    error = _error(predicted, realized)
    cal = calibrate(error)
    assert cal["b"] == pytest.approx(0.5, abs=0.02) and cal["a"] == pytest.approx(0, abs=0.002)
    assert cal["residual"] < 0.003
    new, old = gate(held, error), old_gate(held, error)
    assert new["rule"] == "calibrated" and new["believed"] and new["calibrated"] == pytest.approx(0.02, abs=0.002)
    assert old["rule"] == "proxy error" and not old["believed"]  # the overstatement's RMS, 0.046, beats 0.04
    assert new["threshold"] == pytest.approx((cal["residual"] - cal["a"]) / cal["b"])

    backwards = _error(predicted, [-x / 2 for x in predicted])
    assert not gate(held, backwards)["believed"] and gate(held, backwards)["threshold"] is None

    few = _error(predicted[:MIN_ERROR_UNIONS - 1], realized[:MIN_ERROR_UNIONS - 1])
    assert calibrate(few) is None
    rate = gate(held, few)
    assert rate["rule"] == "protocol rate" and rate["threshold"] == PRIOR_GAIN and rate["believed"]
    assert not gate({"gain": 0.02, "gain_low": 0.01}, few)["believed"]
    assert old_gate(held, few)["rule"] == "window noise + prior"  # 0.02 + 4.26 %: would say uniform
    assert not old_gate(held, few)["believed"] and math.isclose(PRIOR_GAIN, 0.029)
    assert gate({"gain": 0.01, "gain_low": None}, None)["rule"] == "held law"


def test_another_route_s_pick_is_held_second_or_joins_its_twin():
    kept = [{"weights": np.array([1.0, 0, 0]), "source": "a", "fit": 1.0, "also": []},
            {"weights": np.array([0.5, 0.5, 0]), "source": "b", "fit": 1.1, "also": []},
            {"weights": np.array([0, 0.5, 0.5]), "source": "c", "fit": 1.2, "also": []}]
    other = {"weights": np.array([0, 0, 1.0]), "source": "merged route's top", "fit": 2.0, "also": []}
    held = hold_second([dict(c, also=[]) for c in kept], other, limit=3)
    assert [c["source"] for c in held] == ["a", "merged route's top", "b"]  # #2 whatever its fit; 3 in all
    twin = dict(other, weights=np.array([0.01, 0.5, 0.49]))  # within MIN_DISTANCE of c: c is it, moved up
    held = hold_second([dict(c, also=[]) for c in kept], twin, limit=3)
    assert [c["source"] for c in held] == ["a", "c", "b"] and held[1]["also"] == ["merged route's top"]
    first = dict(other, weights=np.array([0.99, 0.01, 0]))  # the same as #1: the order stays
    held = hold_second([dict(c, also=[]) for c in kept], first, limit=3)
    assert [c["source"] for c in held] == ["a", "b", "c"] and held[0]["also"] == ["merged route's top"]


def test_the_route_follows_the_kind_of_target():
    assert default_route(["eval-only"]) == default_route(["seed-known"]) == "ensemble"
    assert default_route(["eval-only", "seed-known"]) == "ensemble"
    assert default_route(["covered"]) == default_route(["covered", "eval-only"]) == "merged"


def test_a_target_no_chosen_unit_covers_takes_the_ensemble_route_with_the_merged_top_second(study_copy):
    """literature, with the fortunes units alone: no unit covers it, so `optimize` (no --route) takes the ensemble
    route and holds the merged route's top candidate at #2; a named route, or a covered target, runs alone."""
    cfg, pool, _, _ = study_copy
    units = "fortunes-00,fortunes-01,literature-00"
    covered = plan_optimization(cfg, pool, ["literature"], None, "mean", None, units, None)
    assert (covered.route, covered.partner) == ("merged", None)
    named = plan_optimization(cfg, pool, ["literature"], None, "mean", None, "fortunes-00,fortunes-01", None, "merged")
    assert (named.route, named.partner) == ("merged", None)
    plan = plan_optimization(cfg, pool, ["literature"], None, "mean", None, "fortunes-00,fortunes-01", None)
    assert (plan.route, plan.partner) == ("ensemble", "merged")
    assert plan.row_id != replace(plan, partner=None, row_id=None).row_id  # another shortlist, another row
    cfg.optimize.candidates = 3
    result = run_optimization(cfg, pool, plan)
    merged_top = run_optimization(cfg, pool, named)["weights"]
    found = result["row"]["candidates"]
    assert len(found) >= 2 and result["row"]["route"] == "ensemble"
    holder = next(c for c in found[:2] if "merged route's top" in [c["source"], *c["also"]])
    assert np.abs(np.asarray(holder["weights"]) - np.asarray(merged_top)).sum() < MIN_DISTANCE
