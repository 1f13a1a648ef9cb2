"""The proxy registry and the fidelity protocol, on a tiny real study with both ground truths."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ablate.core.errors import UsageError
from ablate.data.units import unit_meta
from ablate.fidelity.calibrate import (
    held_out,
    plan_unions,
    ranking_quality,
    refresh,
    union_keys,
)
from ablate.fidelity.protocol import score_study
from ablate.optimize.objectives import Objective
from ablate.optimize.plan import Plan, WeightsBudget
from ablate.optimize.trained import trained_mixtures
from ablate.scoring import proxies
from ablate.scoring.merge import merge_members
from ablate.scoring.score import score_reference_models
from ablate.store.index import Index
from ablate.store.results import existing_rows, write_rows
from ablate.study.budgets import polish_budget, polish_config, short_budget
from ablate.study.context import load_study, member_recipe, polish_unions, short_unions
from ablate.train.loop import train_member
from ablate.train.start import merged_state, unit_members
from ablate.workflows.fidelity_runs import prepare_study

from conftest import copy_study, run_cli, tree_digest, write_config

quiet = dict(log=lambda *a: None)


@pytest.fixture(scope="module")
def both_truths(study, tmp_path_factory):
    """The tiny study prepared by the protocol: every union under both budgets, replicates, task-sum."""
    cfg, pool = copy_study(study[0], tmp_path_factory.mktemp("truths"))
    cfg.name = "tiny"
    cfg.fidelity.unit_replicates = 1  # a second member per unit: the drift rows `private` reads
    cfg.fidelity.short_unions = 0.5  # every truth mixture on half the budget: the unions `short` reads
    cfg.fidelity.polish_unions = 0.25  # every truth mixture's merge trained on a quarter: what `polish` reads,
    cfg.fidelity.polish_orders = 2  # in two data orders, averaged
    return cfg, pool, prepare_study(cfg, **quiet)


def test_plan_unions_is_nested_and_spread():
    units = ["a", "b", "c", "d"]
    four = plan_unions(units, [], 4)
    assert plan_unions(units, [], 2) == four[:2]  # a larger calibration budget extends a smaller one
    assert {len(m) for m in four} >= {2, 3, 4} and set().union(*map(set, four)) == set(units)


def test_every_proxy_predicts_every_case(both_truths):
    cfg, pool, prep = both_truths
    cases = proxies.load_cases(pool, short_unions(cfg), polish_unions(cfg))
    evals = {c.eval_set for c in cases}
    mixtures = {(c.mixture, c.weights) for c in cases}
    assert len(cases) == len(evals) * len(mixtures) == 2 * 15  # 15 mixtures of 4 units x 2 eval sets
    for budget in ("unit", "sum"):
        truths = proxies.load_truths(pool, budget)
        assert len(union_keys(truths)) == 11
        for name in proxies.names():
            pred = proxies.get(name).predict(cases, truths, budget)
            assert pred.shape == (len(cases),) and np.isfinite(pred).all(), name


def test_fitted_proxies_never_read_the_union_they_are_scored_on(both_truths):
    cfg, pool, prep = both_truths
    cases = proxies.load_cases(pool, short_unions(cfg), polish_unions(cfg))
    for budget in ("unit", "sum"):
        truths = proxies.load_truths(pool, budget)
        unions = union_keys(truths)
        fit_on, scored = unions[:4], unions[4:]
        hidden = {k: v for k, v in truths.items() if (k[0], k[1]) not in scored}
        garbage = {k: (v if (k[0], k[1]) not in scored else v + 100.0) for k, v in truths.items()}
        for name in proxies.names():
            a = held_out(name, cases, truths, fit_on, budget)
            assert a == held_out(name, cases, hidden, fit_on, budget) == held_out(name, cases, garbage, fit_on, budget)
            assert {(k[0], k[1]) for k in a if len(k[0]) > 1} == set(scored)  # one prediction per held-out case
        # and they do learn from what they are given: other unions, other predictions
        assert held_out("regression", cases, truths, unions[:4], budget) != \
            held_out("regression", cases, truths, unions[1:5], budget)


def test_calibrated_without_evidence_ranks_like_merged(both_truths):
    cfg, pool, prep = both_truths
    cases = proxies.load_cases(pool)
    merged = proxies.get("merged").predict(cases, {}, "sum")
    for known in ({}, dict(list(proxies.load_truths(pool, "sum").items())[:2])):
        cal = proxies.get("calibrated").predict(cases, known, "sum")
        for ev in {c.eval_set for c in cases}:
            idx = [i for i, c in enumerate(cases) if c.eval_set == ev]
            assert np.argsort(cal[idx]).tolist() == np.argsort(merged[idx]).tolist()


@pytest.mark.parametrize("name, base", [("calibrated", "merged"), ("calibrated-ensemble", "ensemble")])
def test_calibrated_recovers_a_size_effect(name, base):
    """Synthetic truths = base + c_relation * log k (0 at k = 1, as for real unions of one unit):
    the fit finds the slopes and, as they predict held-out unions better, keeps them; on the ensemble
    the same, and the merge's values are not what it corrects."""
    rng = np.random.default_rng(0)
    units = [f"u{i}" for i in range(5)]
    slope = {"own": -0.3, "seed": 0.2, "other": 0.05}
    cases, truths = [], {}
    for k in range(1, 6):
        for mix in __import__("itertools").combinations(units, k):
            for ev, rel in (("a", "own" if "u0" in mix else "other"), ("b", "seed")):
                merged = float(rng.uniform(4, 6))  # a unit alone: its member, under either proxy
                c = proxies.Case(mix, proxies.wkey([1 / k] * k), ev, merged, None,
                                 tuple(float(rng.uniform(4, 6)) for _ in mix), rel,
                                 ensemble=merged if k == 1 else float(rng.uniform(4, 6)))
                cases.append(c)
                truths[c.key] = getattr(c, base) + slope[rel] * math.log(k)
    known = {k: v for k, v in truths.items() if len(k[0]) > 1}
    model = proxies.get(name).fit(cases, known, "sum")
    assert model["with_size"]
    assert np.allclose(model["coef"], [0.0, 0.0, -0.3, 0.2, 0.05], atol=1e-2)
    held = [c for c in cases if c.k > 1]
    assert np.allclose(proxies.get(name).predict(held, known, "sum"), [truths[c.key] for c in held], atol=1e-2)
    assert not proxies.scored(name, [dataclasses.replace(cases[0], ensemble=None)]) or base == "merged"


def test_unit_shifts_recover_a_per_unit_effect_and_otherwise_rank_as_merged():
    """Synthetic truths = merged + sum_i a_i w_i (1 - w_i) on one eval set (what a unit does in a union and not in a
    merge), none on another (noise only): the shifts are found and predict unions they never saw; the noise set keeps
    no shift (the leave-one-union-out gate); a unit alone and a fit without unions are the merge exactly."""
    import itertools

    rng = np.random.default_rng(0)
    units = [f"u{i}" for i in range(5)]
    shift = dict(zip(units, [0.12, -0.08, 0.0, 0.05, -0.1]))
    cases, truths = [], {}
    for k in range(1, 6):
        for mix in itertools.combinations(units, k):
            for ev in ("seedtext", "noise"):
                c = proxies.Case(mix, proxies.wkey([1 / k] * k), ev, float(rng.uniform(4, 6)), None,
                                 tuple(float(rng.uniform(4, 6)) for _ in mix), "seed")
                cases.append(c)
                effect = sum(shift[u] / k * (1 - 1 / k) for u in mix) if ev == "seedtext" else rng.normal(0, 0.01)
                truths[c.key] = c.merged + (effect if k > 1 else 0.0)
    proxy = proxies.get("unit-shifts")
    unions = sorted({(c.mixture, c.weights) for c in cases if c.k > 1})
    fit_on = unions[::2]
    known = {k: v for k, v in truths.items() if (k[0], k[1]) in fit_on}
    model = proxy.fit(cases, known)
    assert set(model) == {"seedtext"}  # noise alone never wins leave-one-union-out
    found = model["seedtext"]["shifts"]  # shrunk toward 0 by the ridge, in the same order and signs
    assert np.argsort(found).tolist() == np.argsort([shift[u] for u in units]).tolist()
    assert np.allclose(found, [shift[u] for u in units], atol=0.04)
    held = [i for i, c in enumerate(cases) if (c.mixture, c.weights) not in fit_on and c.eval_set == "seedtext"
            and c.k > 1]
    pred = proxy.predict(cases, known, "unit")[held]  # as the protocol asks: every case, the truths it may use
    held = [cases[i] for i in held]
    merged = np.asarray([c.merged for c in held])
    truth = np.asarray([truths[c.key] for c in held])
    assert np.abs(pred - truth).mean() < 0.5 * np.abs(merged - truth).mean()
    alone = [c for c in cases if c.k == 1]
    assert np.array_equal(proxy.predict(alone, known, "unit"), [c.merged for c in alone])
    assert np.array_equal(proxy.predict(cases, {}, "unit"), [c.merged for c in cases])


def test_task_sum_is_the_seed_plus_every_task_vector(both_truths):
    cfg, pool, prep = both_truths
    from ablate.scoring.proxies.task_sum import TaskSum
    from ablate.study.context import load_study

    study = load_study(cfg, pool)
    a, b = (study.unit_member(u) for u in ("fortunes-00", "literature-00"))
    seed = load_file(str(pool.weights_path(study.seed["model_id"])))
    ta, tb = load_file(str(pool.weights_path(a))), load_file(str(pool.weights_path(b)))
    state = TaskSum.build(pool, study.seed["model_id"], [a, b], [0.5, 0.5])
    for name, t in state.items():
        assert torch.allclose(t, ta[name] + tb[name] - seed[name], atol=1e-5), name
    alone = TaskSum.build(pool, study.seed["model_id"], [a], [1.0])
    assert all(torch.allclose(alone[n], ta[n], atol=1e-6) for n in alone)  # one unit: its member
    cases = proxies.load_cases(pool)
    assert all(c.task_sum is not None for c in cases if c.k > 1)
    for c in cases:
        if c.k == 1 and c.task_sum is not None:
            assert math.isclose(c.task_sum, c.merged, rel_tol=1e-5)


def test_protocol_scores_every_proxy_out_of_sample(both_truths):
    cfg, pool, prep = both_truths
    result = score_study(cfg, prep, "tiny.yaml")
    rows = result["rows"]
    assert {r["budget"] for r in rows} == {"unit", "sum"}
    assert {r["proxy"] for r in rows} == set(cfg.fidelity.proxies)
    for r in rows:
        assert r["held_out"] == 11 - r["m"] and r["n"] == r["held_out"]
    assert {r["m"] for r in rows} == {0, 2, 4}  # 2n = 8 would leave fewer than 4 held out
    # unfitted proxies do not depend on the calibration budget except through the held-out set
    m0 = [r for r in rows if r["m"] == 0 and r["proxy"] == "merged"]
    direct = proxies.load_truths(pool, m0[0]["budget"])
    assert all(0 <= r["pairwise_agreement"] <= 1 for r in m0) and direct


def test_refresh_stores_fitted_rows_per_ground_truth(both_truths):
    cfg, pool, prep = both_truths
    fitted = refresh(pool, cfg.eval.seq_len, **quiet)
    assert set(fitted) == {(m, b) for m in ("calibrated", "regression") for b in ("unit", "sum")}
    _, rows = Index(pool).query("SELECT method, budget, count(*) FROM mixture_perplexity "
                                "WHERE method IN ('calibrated', 'regression') GROUP BY ALL")
    assert {(m, b): n for m, b, n in rows} == {k: 30 for k in fitted}
    _, fid = Index(pool).query("SELECT DISTINCT budget, proxy, in_sample FROM proxy_fidelity")
    assert ("unit", "calibrated", True) in fid and ("sum", "merged", False) in fid
    assert refresh(pool, cfg.eval.seq_len, **quiet) == fitted  # unchanged fits write nothing new


def test_short_ranks_by_each_mixtures_own_short_union(both_truths):
    cfg, pool, prep = both_truths
    label, recipe = short_unions(cfg)
    assert label == short_budget(cfg) == "tokens=2048"  # half of a 4096-token unit, in whole sequences
    shorts = proxies.load_truths(pool, label, recipe=recipe)
    assert len(union_keys(shorts)) == 11  # one per truth mixture, each trained on half the equal-compute budget
    spent = Index(pool).rows("SELECT units, train_tokens, steps FROM models WHERE kind = 'union' AND budget = ?",
                             [label])
    full = Index(pool).rows("SELECT DISTINCT steps FROM models WHERE kind = 'union' AND budget = 'unit'")
    assert len(spent) == 11 and {r["train_tokens"] for r in spent} == {2048}
    # a full union's steps (and so its learning-rate schedule) on half the batch: half the tokens
    assert {r["steps"] for r in spent} == {r["steps"] for r in full}
    cases = proxies.load_cases(pool, (label, recipe))
    pred = proxies.get("short").predict(cases, {}, "unit")
    for c, p in zip(cases, pred):  # a member alone is itself; a union of k is its own short union's log ppl
        assert p == (c.merged if c.k == 1 else shorts[c.key])
    assert not proxies.scored("short", proxies.load_cases(pool))  # a study without short unions leaves it out
    with pytest.raises(ValueError, match="no short union"):
        proxies.get("short").predict(proxies.load_cases(pool), {}, "unit")
    rows = [r for r in score_study(cfg, prep, "tiny.yaml")["rows"] if r["proxy"] == "short"]
    assert rows and {r["budget"] for r in rows} == {"unit"}  # its unions answer the equal-compute question only
    assert all(r["calibration_unit_trainings"] == 0.5 * r["held_out"] for r in rows)  # half a union per mixture
    # a union of as many tokens on the full batch (half the steps: short unions before short_config) is not read
    mix = next(m for m in prep["truths"] if len(m) == 2)
    train_member(cfg, pool, mix, tokens=label.removeprefix("tokens="), **quiet)
    study = load_study(cfg, pool)
    write_rows(pool, score_reference_models(study, [mix], existing_rows(pool, study.precision)))
    assert proxies.load_truths(pool, label) != shorts  # without the recipe, its rows would read as short ones
    assert proxies.load_truths(pool, label, recipe=recipe) == shorts


def test_polish_ranks_by_each_mixtures_merge_trained_further(both_truths):
    cfg, pool, prep = both_truths
    label, recipe, orders = polish_unions(cfg)
    assert label == polish_budget(cfg) == "tokens=1024" and orders == 2  # a quarter of a 4096-token unit
    assert "start" not in member_recipe(cfg).key()  # start = seed adds nothing: every member keeps its id
    first, second = (proxies.load_truths(pool, label, replicate=r, recipe=recipe) for r in (0, 1))
    assert len(union_keys(first)) == len(union_keys(second)) == 11  # one per truth mixture and data order
    polished = {k: (first[k] + second[k]) / 2 for k in first}  # what the proxy ranks by: their mean
    assert first != second  # another data order, another run
    study = load_study(cfg, pool)
    runs = [pool.read_meta(r["model_id"]) for r in Index(pool).rows(
        "SELECT model_id FROM models WHERE kind = 'union' AND budget = ? AND recipe_id = ?", [label, recipe])]
    assert len(runs) == 22 and {m["replicate"] for m in runs} == {0, 1}
    for meta in runs:  # each order starts from the merge of its units' first members, weighted as the mixture
        assert meta["start"] == {"from": "merge", "members": [study.unit_member(u) for u in meta["units"]],
                                 "weights": meta["weights"]}
    # the same run from the seed (same recipe otherwise, same data order: the same first batch) starts higher:
    # the merge already learned the units; and its rows are never read as polished ones
    mix = next(m for m in prep["truths"] if len(m) == 3)
    seeded = train_member(cfg, pool, mix, tokens=label.removeprefix("tokens="), **quiet)
    own = next(m for m in runs if sorted(m["units"]) == sorted(mix) and m["replicate"] == 0)
    assert seeded["steps"] == own["steps"] and own["loss_curve"][0] < seeded["loss_curve"][0]
    write_rows(pool, score_reference_models(load_study(cfg, pool), [mix], existing_rows(pool, study.precision)))
    assert proxies.load_truths(pool, label, recipe=recipe) == first
    # nor does the optimizer count a polished merge (or a short union) as a union of as many tokens
    units = sorted({u for m in prep["truths"] for u in m})
    tokens = [int(unit_meta(pool, u)["n_tokens"]) for u in units]
    plan = Plan(objective=Objective("mean", ("fortunes",)), units=units, unit_tokens=tokens,
                budget=WeightsBudget.of(tokens, 1024), caps=np.ones(len(units)))
    assert [m["model_id"] for m in trained_mixtures(pool, study, plan)] == [seeded["model_id"]]
    cases = proxies.load_cases(pool, polish=(label, recipe, orders))
    for c, p in zip(cases, proxies.get("polish").predict(cases, {}, "unit")):  # a member alone is itself
        assert p == pytest.approx(c.merged if c.k == 1 else polished[c.key], abs=1e-12)
    assert not proxies.scored("polish", proxies.load_cases(pool))
    with pytest.raises(ValueError, match="no polished merge"):
        proxies.get("polish").predict(proxies.load_cases(pool), {}, "unit")
    rows = [r for r in score_study(cfg, prep, "tiny.yaml")["rows"] if r["proxy"] == "polish"]
    assert rows and {r["budget"] for r in rows} == {"unit"}
    assert all(r["calibration_unit_trainings"] == 0.5 * r["held_out"] for r in rows)  # a quarter x 2 orders
    # the start is the `merged` proxy's own merge of those members (summed in the same order)
    members = own["start"]["members"]
    start, proxy_merge = merged_state(pool, members, own["weights"], False), merge_members(pool, members, own["weights"])
    assert start.keys() == proxy_merge.keys() and all(torch.equal(start[k], proxy_merge[k]) for k in start)
    # a merge of members another recipe would have trained is refused, naming the units
    metas = [unit_meta(pool, u) for u in mix]
    other = dataclasses.replace(member_recipe(polish_config(cfg)), lr=0.123)
    with pytest.raises(UsageError, match=f"members of {mix[0]}.*train-partition"):
        unit_members(pool, study.seed["model_id"], metas, other, {})


def test_ranking_quality_on_a_constant_proxy_is_not_a_crash():
    q = ranking_quality(np.zeros(4), np.array([1.0, 2.0, 3.0, 4.0]))
    assert math.isnan(q["spearman"]) and q["n"] == 4


def test_fidelity_cli_end_to_end_and_bad_config(study, tmp_path, capsys):
    cfg, _ = copy_study(study[0], tmp_path / "f")
    cfg.name = "tiny-cli"
    cfg.fidelity.truth_mixtures = 6
    cfg.fidelity.proxies = ["merged", "calibrated"]
    cfg.fidelity.budgets = ["unit"]
    cfg.optimize.steps = 10
    good = write_config(cfg, tmp_path / "tiny.yaml")
    out = tmp_path / "F.md"
    code, stdout, err = run_cli(["fidelity", str(good), "--out", str(out)], capsys)
    assert code == 0, err
    text = out.read_text()
    assert "Ground truth `unit`" in text and "| merged |" in text and "ablate fidelity" in text
    assert out.with_suffix(".json").exists()
    # and the optimized mixtures, retrained: every eval set alone and their mean, three routes trained
    weights = text.split("## Optimized mixtures, retrained")[1]
    assert "| fortunes |" in weights and "| literature |" in weights and "| mean(fortunes,literature) |" in weights
    raw = json.loads((tmp_path / "F-weights.json").read_text())["optimized_mixtures"][0]
    assert raw["study"] == "tiny-cli" and all(c["unions_compared"] >= 4 for c in raw["cases"])
    # the ensemble route is retrained too, and every case says which kind of target it is
    assert all("ensemble_gain" in c and c["target"] in ("covered", "seed-known", "eval-only", "mean") for c in raw["cases"])
    assert "### Routes by kind of target" in weights and "| covered | ensemble |" in weights
    # and what `--validate 1` and `--validate 3` would have followed (the route's candidates #2, #3 retrained)
    assert all({"validate1_gain", "validate3_gain"} <= set(c) for c in raw["cases"])
    assert "| covered | default route, --validate 3 |" in weights and "K = 3 captured" in weights
    # a rankings-only rerun rescores and keeps the weights section it does not own, word for word
    code, _, err = run_cli(["fidelity", str(good), "--rankings-only", "--out", str(out)], capsys)
    assert code == 0, err
    assert out.read_text().split("## Optimized mixtures, retrained")[1] == weights

    bad = cfg.model_copy(deep=True)
    bad.pool = str(tmp_path / "bad-pool")
    bad.units.eval_only_domains = ["klingon"]
    path = write_config(bad, tmp_path / "bad.yaml")
    before = tree_digest(tmp_path)
    code, _, err = run_cli(["fidelity", str(good), str(path), "--out", str(tmp_path / "G.md")], capsys)
    assert code == 2 and err.count("error:") == 1 and "klingon" in err and "Traceback" not in err
    assert tree_digest(tmp_path) == before and not (tmp_path / "bad-pool").exists()


def test_additive_adds_each_units_own_effect(both_truths):
    cfg, pool, prep = both_truths
    cases = proxies.load_cases(pool)
    for budget in ("unit", "sum"):
        pred = proxies.get("additive").predict(cases, {}, budget)
        for c, p in zip(cases, pred):
            deltas = [m - c.seed for m in c.members]
            expect = c.seed + (sum(deltas) if budget == "sum" else float(np.mean(deltas)))
            assert math.isclose(p, expect, rel_tol=1e-6)  # weights are stored to 6 decimals
            if c.k == 1:
                assert math.isclose(p, c.merged, rel_tol=1e-12)  # one unit: its member
    # with no union to learn from, the composition regression of the add-data truth is the additive proxy
    reg = proxies.get("regression").predict(cases, {}, "sum")
    assert np.allclose(reg, proxies.get("additive").predict(cases, {}, "sum"), atol=0.05)  # up to its ridge


def test_task_vectors_say_how_much_of_a_member_is_its_own_run(both_truths):
    """Two runs of one unit share more of their task vectors than two units do; unions sit mostly in the members'
    span at about their weights (fidelity/task_vectors.py, quoted in each study's line of FIDELITY.md)."""
    from ablate.fidelity.task_vectors import geometry
    from ablate.study.context import load_study

    cfg, pool, _ = both_truths
    g = geometry(pool, load_study(cfg, pool))
    assert 0 < g["member_norm"] and -1 <= g["member_cosine"] < g["replicate_cosine"] < 1
    assert g["unions"] >= 1 and 0 <= g["outside_span"] < 1 and g["coefficient_over_weight"] > 0


def test_the_noise_ceiling_is_what_one_retraining_allows():
    from ablate.fidelity.calibrate import noise_ceiling

    truth = np.asarray([1.0, 1.1, 1.2, 1.3])
    assert noise_ceiling(truth, 0.0) == 1.0
    assert noise_ceiling(truth, float(np.std(truth, ddof=1))) == pytest.approx(0.0, abs=1e-6)
    assert 0 < noise_ceiling(truth, 0.05) < 1 and math.isnan(noise_ceiling(truth, None))


def test_the_left_out_choice_is_compared_with_the_merge_on_the_same_held_out_mixtures():
    """A proxy picked at m = n is scored on the unions it did not fit on; the merge beside it must be too (at m = 0
    the merge is scored on every union, a different and larger set)."""
    from ablate.fidelity.protocol import left_out_choices

    def row(study, proxy, m, spearman, within):
        return {"study": study, "budget": "unit", "m_label": m, "m": {"0": 0, "n": 4}[m], "proxy": proxy,
                "target": "eval-only", "eval_set": "e", "spearman": spearman, "pairwise_agreement": spearman,
                "ceiling": 1.0, "top1": within, "top1_within_noise": within, "regret": 0.0 if within else 0.05,
                "calibration_unit_trainings": 0}

    rows = [row(s, p, m, sp, w) for s in ("s1", "s2", "s3") for p, m, sp, w in
            (("merged", "0", 0.5, False), ("merged", "n", 0.8, True), ("unit-shifts", "n", 0.9, True))]
    for choice in left_out_choices(rows, "eval-only"):
        assert choice["proxy"] == "unit-shifts" and choice["m"] == "n"
        assert choice["merged"]["median_spearman"] == 0.8 and choice["merged"]["top1_noise"] == 1

