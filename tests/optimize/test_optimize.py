"""`ablate optimize` on the tiny real study: planted target, held windows unseen, determinism, caps, refusals,
validation by retraining, and the multi-target search/sweep that share the objective."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ablate.models.model import model_from_config, seed_config
from ablate.optimize.merged_route import fit_values, optimize_merged, proxy_error, split_windows
from ablate.optimize.objectives import parse_objective
from ablate.scoring.inplace import MemberSpace
from ablate.store.index import Index
from ablate.train.study import load_study
from conftest import run_cli, tree_digest, write_config

UNITS = ["fortunes-00", "fortunes-01", "literature-00", "literature-01"]
quiet = dict(log=lambda *a: None)


def _rows(pool, sql):
    cols, rows = Index(pool).query(sql)
    return [dict(zip(cols, r)) for r in rows]


def test_planted_target_validated_and_written_out(study_copy, tmp_path, capsys):
    """Eval set = the literature units' domain: the weight goes there; the row, the file and the retrained
    unions say so; a rerun gives the same weights (deterministic)."""
    cfg, pool, _, _ = study_copy
    path = str(write_config(cfg, tmp_path / "c.yaml"))
    code, out, err = run_cli(["optimize", "--target", "literature", "--out", str(tmp_path / "w.json"),
                              "--validate", "-c", path], capsys)
    assert code == 0, err
    row = _rows(pool, "SELECT * FROM optimizations")[0]
    weights = dict(zip(row["units"], row["weights"]))
    assert weights["literature-00"] + weights["literature-01"] > 0.8, weights
    assert sum(row["weights"]) == pytest.approx(1) and row["objective"] == "literature"
    assert row["held_optimized"] is not None and row["fit_optimized"] < row["fit_uniform"]
    assert row["validated"] and row["unions_compared"] >= 3 and row["union_uniform"] is not None
    doc = json.loads((tmp_path / "w.json").read_text())
    assert doc["weights"] == {u: w for u, w in weights.items() if w > 0} and doc["budget_tokens"] == 4096
    assert "retrained on the held windows" in out and "stored as opt-" in out
    unions = list(pool.iter_metas("union"))
    assert any(m["units"] == UNITS and m["budget"] == "unit" for m in unions)  # the uniform union
    assert any(m.get("replicate") == 1 and m["budget"] == "unit" for m in unions)  # the noise band
    assert row["proxy_error"] is None and "check the gain against the proxy's own error" in out  # no union yet
    code, out, err = run_cli(["optimize", "--target", "literature", "-c", path], capsys)
    assert code == 0, err
    again = _rows(pool, "SELECT * FROM optimizations")
    assert len(again) == 1 and again[0]["weights"] == row["weights"]  # same id, same numbers
    # the validation trained the uniform union and the weighted one: now the gate knows the proxy's error
    again = again[0]
    assert again["proxy_error_unions"] == 1 and "the proxy's own error on this objective" in out
    believed = again["resolved"] and again["held_gain"] > again["proxy_error"]
    assert again["recommended"] == ("optimized" if believed else "uniform")


def test_the_held_windows_are_never_seen(study):
    """Scrambling the tokens of the held windows changes nothing the optimizer did, only what it reports."""
    cfg, pool, _, _ = study
    objective = parse_objective(["fortunes,literature"], ["fortunes", "literature"])
    cfg = cfg.model_copy(deep=True)
    cfg.optimize.steps = 8
    first = optimize_merged(load_study(cfg, pool, objective.eval_sets), UNITS, objective, None, **quiet)
    study = load_study(cfg, pool, objective.eval_sets)
    seq = cfg.eval.seq_len
    split = split_windows(study, objective.eval_sets, cfg.optimize.fit_fraction, cfg.optimize.split_seed)
    rng = np.random.default_rng(0)
    for name, part in split.items():
        tokens = study.eval_tokens[name].copy()
        for i in part["held_index"]:
            tokens[i * seq:(i + 1) * seq] = rng.integers(1, 500, seq)
        study.eval_tokens[name] = tokens
    second = optimize_merged(study, UNITS, objective, None, **quiet)
    assert second["weights"] == first["weights"] and second["history"] == first["history"]
    assert second["fit"] == first["fit"]
    assert second["held"]["uniform"] != first["held"]["uniform"]


def test_the_proxy_error_is_the_trained_minus_the_merged_gain(study):
    """Trained values equal to the merged ones: no error; one union 0.3 nats worse once trained: its error is
    -0.3 and the root mean square over the two unions 0.3 / sqrt(2)."""
    cfg, pool, _, _ = study
    objective = parse_objective(["literature"], ["fortunes", "literature"])
    st = load_study(cfg, pool, objective.eval_sets)
    model = model_from_config(seed_config(pool, st.seed["model_id"]), st.device)
    space = MemberSpace.of_members(pool, [st.unit_member(u) for u in UNITS], model)
    split = split_windows(st, ["literature"], cfg.optimize.fit_fraction, cfg.optimize.split_seed)
    tokens = {s: int(part["fit"].numel()) for s, part in split.items()}
    uniform, pair, own = np.full(4, 0.25), np.array([0.5, 0, 0.5, 0]), np.array([0, 0, 0.5, 0.5])
    merged = [fit_values(space, model, split, w, 8) for w in (uniform, pair, own)]
    exact = {"uniform": merged[0], "unions": [(pair, merged[1]), (own, merged[2])]}
    values_of = lambda w: fit_values(space, model, split, w, 8)  # noqa: E731
    assert proxy_error(values_of, objective, exact, merged[0], tokens)["rms"] == pytest.approx(0, abs=1e-6)
    worse = dict(exact, unions=[(pair, {"literature": merged[1]["literature"] + 0.3}), (own, merged[2])])
    error = proxy_error(values_of, objective, worse, merged[0], tokens)
    assert error["errors"] == pytest.approx([-0.3, 0], abs=1e-6) and error["unions"] == 2
    assert error["rms"] == pytest.approx(0.3 / math.sqrt(2), abs=1e-6)


def test_the_repetition_cap_holds(study_copy, tmp_path, capsys):
    """A budget of 3 units' tokens at 1 epoch caps every weight at 1/3, however much the target wants one domain."""
    cfg, pool, _, _ = study_copy
    code, out, err = run_cli(["optimize", "--target", "literature", "--tokens", str(3 * 4096), "--max-epochs", "1",
                              "--steps", "15", "-c", str(write_config(cfg, tmp_path / "c.yaml"))], capsys)
    assert code == 0, err
    row = _rows(pool, "SELECT * FROM optimizations")[0]
    assert max(row["weights"]) <= 1 / 3 + 1e-9 and max(row["epochs"]) <= 1 + 1e-9
    assert row["budget_tokens"] == 3 * 4096 and sum(row["tokens"]) == pytest.approx(3 * 4096, abs=4)


def test_the_regression_route_fits_the_trained_mixtures(study_copy, tmp_path, capsys):
    """Points: the one trained union and the four units alone (free at one unit's budget); literature's own
    units have the lowest fitted slopes, so the law's optimum sits at a literature vertex."""
    cfg, pool, _, _ = study_copy
    code, out, err = run_cli(["optimize", "--target", "literature", "--route", "regression", "-c",
                              str(write_config(cfg, tmp_path / "c.yaml"))], capsys)
    assert code == 0, err
    row = _rows(pool, "SELECT * FROM optimizations")[0]
    assert row["route"] == "regression" and "no interval" in out
    weights = dict(zip(row["units"], row["weights"]))
    assert max(weights, key=weights.get).startswith("literature") and sum(row["weights"]) == pytest.approx(1)


BAD = [
    (["--target", "nope"], "unknown eval set 'nope'"),
    (["--target", "fortunes", "--target", "fortunes"], "named twice"),
    (["--target", "fortunes,literature", "--target-weights", "1,x"], "--target-weights"),
    (["--target", "fortunes", "--max-loss", "nope:5"], "unknown eval set 'nope'"),
    (["--target", "fortunes", "--max-loss", "5"], "EVAL_SET:PERCENT"),
    (["--target", "fortunes", "--max-epochs", "0"], "max_epochs"),
    (["--target", "fortunes", "--tokens", "10000000000000"], "max-epochs"),
    (["--target", "fortunes", "--units", "fortunes-00"], "2 or more units"),
    (["--target", "fortunes", "--out", "weights.txt"], ".json, .yaml or .yml"),
    (["--target", "fortunes", "--objective", "best"], "--objective"),
    (["--target", "fortunes", "--route", "bogus"], "--route"),
]


def test_bad_objectives_are_one_line_exit_2_and_touch_nothing(study_copy, tmp_path, capsys):
    """One pool for every case (each must leave it as it was, so they cannot disturb each other)."""
    cfg, pool, _, _ = study_copy
    path = str(write_config(cfg, tmp_path / "c.yaml"))
    before = tree_digest(pool.root)
    for args, message in BAD:
        code, _, err = run_cli(["optimize", *args, "-c", path], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, (args, err)
        assert tree_digest(pool.root) == before, args


def test_search_and_sweep_rank_by_the_shared_objective(study_copy, tmp_path, capsys):
    cfg, pool, _, _ = study_copy
    path = str(write_config(cfg, tmp_path / "c.yaml"))
    code, out, err = run_cli(["search", "--target", "fortunes", "--target", "literature", "--max-size", "2",
                              "-c", path], capsys)
    assert code == 0, err
    rows = _rows(pool, "SELECT * FROM searches ORDER BY rank")
    assert {r["objective"] for r in rows} == {"mean(fortunes,literature)"}
    merged = {(tuple(r["mixture"]), r["eval_set"]): r["ppl"] for r in
              _rows(pool, "SELECT mixture, eval_set, ppl FROM mixture_perplexity WHERE method = 'merged'")}
    top = tuple(rows[0]["mixture"])
    geo = math.exp((math.log(merged[(top, "fortunes")]) + math.log(merged[(top, "literature")])) / 2)
    assert rows[0]["proxy_ppl"] == pytest.approx(geo)
    assert [r["proxy_ppl"] for r in rows] == sorted(r["proxy_ppl"] for r in rows)
    code, out, err = run_cli(["sweep", "--max-size", "2", "--target", "fortunes,literature", "--objective", "worst",
                              "-c", path], capsys)
    assert code == 0, err
    assert "for worst(fortunes,literature) by the merged proxy" in out
