"""`ablate optimize` on the tiny real study: planted target, held windows unseen, determinism, caps, refusals,
validation by retraining, and the multi-target search/sweep that share the objective."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ablate.models.model import model_from_config, seed_config
from ablate.optimize.merged_route import fit_values, optimize_merged
from ablate.optimize.objectives import parse_objective
from ablate.optimize.protocol import proxy_error, split_windows
from ablate.scoring.inplace import MemberSpace
from ablate.store.index import Index
from ablate.study.context import load_study

from conftest import run_cli, tree_digest, write_config

UNITS = ["fortunes-00", "fortunes-01", "literature-00", "literature-01"]
quiet = dict(log=lambda *a: None)


def _rows(pool, sql):
    cols, rows = Index(pool).query(sql)
    return [dict(zip(cols, r)) for r in rows]


def test_a_broken_guard_recommends_uniform_everywhere(study_copy, tmp_path, capsys):
    """`optimize --target fortunes --max-loss literature:0 --out guard.json`: the guard breaks on the held windows,
    so the table, the row and the file carry the uniform weights (integer tokens summing to the budget), the
    optimized ones only under `optimized`, and the breach in %."""
    cfg, pool, _, _ = study_copy
    out_file = tmp_path / "guard.json"
    code, out, err = run_cli(["optimize", "--target", "fortunes", "--max-loss", "literature:0", "--out",
                              str(out_file), "-c", str(write_config(cfg, tmp_path / "c.yaml"))], capsys)
    assert code == 0, err
    row = _rows(pool, "SELECT * FROM optimizations")[0]
    assert not row["guards_held"] and row["recommended"] == "uniform" and row["weights"] == [0.25] * 4
    assert row["optimized_weights"] != row["weights"] and row["tokens"] == [1024] * 4
    guard = json.loads(row["guards"])["literature"]
    assert guard["breach_pct"] > 0 and guard["change_pct"] == pytest.approx(guard["breach_pct"])
    assert f"breached by {guard['breach_pct']:.2f} %" in out and "train with the uniform weights" in out
    assert "recommended: the uniform weights" in out
    table = out[:out.index("recommended:")]
    assert "│ 0.25   │ 1024   │ 0.25   │" in table  # the weight column is the recommendation
    doc = json.loads(out_file.read_text())
    assert doc["recommended"] == "uniform" and set(doc["weights"].values()) == {0.25}
    assert doc["tokens"] == dict.fromkeys(UNITS, 1024) and doc["domains"]["tokens"] == {"fortunes": 2048,
                                                                                        "literature": 2048}
    assert doc["optimized"]["weights"] == {u: w for u, w in zip(UNITS, row["optimized_weights"]) if w > 0}
    assert doc["guards"]["literature"]["breach_pct"] == pytest.approx(guard["breach_pct"])


@pytest.mark.parametrize("route", ["merged", "ensemble", "regression"])
def test_every_route_stores_the_recommendation_and_reuses_it(route, study_copy, tmp_path, capsys):
    """Each route: the file's weights are the row's recommended ones; tokens are integers summing to the budget
    (3 units' tokens, not divisible by 7 parts); an identical rerun reuses the row (nothing recomputed)."""
    cfg, pool, _, _ = study_copy
    path = str(write_config(cfg, tmp_path / "c.yaml"))
    args = ["optimize", "--target", "literature", "--route", route, "--out", str(tmp_path / "w.yaml"), "-c", path]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    row = _rows(pool, "SELECT * FROM optimizations")[0]
    assert row["route"] == route and sum(row["tokens"]) == 4096 == sum(row["optimized_tokens"])
    assert all(isinstance(t, int) for t in row["tokens"])
    import yaml
    doc = yaml.safe_load((tmp_path / "w.yaml").read_text())
    assert doc["weights"] == {u: w for u, w in zip(row["units"], row["weights"]) if w > 0}
    assert doc["recommended"] == row["recommended"]
    if row["recommended"] == "uniform":
        assert row["weights"] == [0.25] * 4
    code, again, err = run_cli(args, capsys)
    assert code == 0 and f"reused {row['row_id']}" in again, err
    assert _rows(pool, "SELECT created_at FROM optimizations")[0]["created_at"] == row["created_at"]


def test_tokens_are_integers_summing_to_the_budget_and_grouped_by_domain():
    from ablate.optimize.optimization import by_domain, integer_tokens

    for weights, budget in (([1, 1, 1], 16384), ([0.5, 0.25, 0.25, 0], 16383), ([0.7, 0.2, 0.1], 7)):
        tokens = integer_tokens(weights, budget)
        assert sum(tokens) == budget and all(isinstance(t, int) for t in tokens)
        exact = [w / sum(weights) * budget for w in weights]
        assert all(abs(t - e) < 1 for t, e in zip(tokens, exact))
    assert integer_tokens([1, 1, 1], 16384) == [5462, 5461, 5461]
    assert by_domain(["a", "b", "a"], [0.2, 0.5, 0.3]) == {"a": 0.5, "b": 0.5}


def test_the_old_gate_needs_three_unions_to_claim_an_error():
    """The gate before issue 39 (kept beside the new one): with fewer than 3 trained unions the RMS is not used (nor
    stored): the window noise plus the stated prior decides; with 3 or more the measured error does."""
    from ablate.optimize.protocol import PRIOR_PROXY_ERROR
    from ablate.optimize.protocol import old_gate as gate

    held = {"gain": 0.03, "gain_low": 0.02}
    one = gate(held, {"rms": 0.0006, "unions": 1})
    assert one["rule"] == "window noise + prior" and one["rms"] is None
    assert one["threshold"] == pytest.approx(0.01 + PRIOR_PROXY_ERROR) and not one["believed"]
    assert gate(held, None)["rule"] == "window noise + prior"
    three = gate(held, {"rms": 0.0006, "unions": 3})
    assert three["rule"] == "proxy error" and three["believed"] and three["rms"] == 0.0006
    assert gate({"gain": 0.01, "gain_low": None}, None)["rule"] == "held law"


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
    assert max(row["optimized_weights"]) <= 1 / 3 + 1e-9 and max(row["optimized_epochs"]) <= 1 + 1e-3
    assert row["budget_tokens"] == 3 * 4096 and sum(row["tokens"]) == 3 * 4096 == sum(row["optimized_tokens"])


def test_the_regression_route_fits_the_trained_mixtures(study_copy, tmp_path, capsys):
    """Points: the one trained union and the four units alone (free at one unit's budget); literature's own
    units have the lowest fitted slopes, so the law's optimum sits at a literature vertex."""
    cfg, pool, _, _ = study_copy
    code, out, err = run_cli(["optimize", "--target", "literature", "--route", "regression", "-c",
                              str(write_config(cfg, tmp_path / "c.yaml"))], capsys)
    assert code == 0, err
    row = _rows(pool, "SELECT * FROM optimizations")[0]
    assert row["route"] == "regression" and "no interval" in out
    weights = dict(zip(row["units"], row["optimized_weights"]))
    assert max(weights, key=weights.get).startswith("literature") and sum(row["weights"]) == pytest.approx(1)


BAD = [
    (["--target", "nope"], "unknown eval set 'nope'"),
    (["--target", "fortunes", "--target", "fortunes"], "named twice"),
    (["--target", "fortunes,literature", "--target-weights", "1,x"], "--target-weights"),
    (["--target", "fortunes", "--max-loss", "nope:5"], "unknown eval set 'nope'"),
    (["--target", "fortunes", "--max-loss", "5"], "EVAL_SET:PERCENT"),
    (["--target", "fortunes", "--max-epochs", "0"], "--max-epochs must be > 0"),  # the flag typed, not --set
    (["--target", "fortunes", "--steps", "0"], "--steps must be 1 or more"),
    (["--target", "fortunes", "--floor", "1"], "--floor must be >= 0 and < 1"),
    (["--target", "fortunes", "--tokens", "0"], "--tokens must be a positive"),
    (["--target", "fortunes", "--tokens", "10000000000000"], "max-epochs"),
    (["--target", "fortunes", "--units", "fortunes-00"], "2 or more units"),
    (["--target", "fortunes", "--out", "weights.txt"], ".json, .yaml or .yml"),
    (["--target", "fortunes", "--objective", "best"], "--objective"),
    (["--target", "fortunes", "--route", "bogus"], "--route"),
    (["--target", "fortunes", "--validate", "0"], "--validate K must be 1 or more"),
    (["--target", "fortunes", "--candidates", "0"], "--candidates must be 1 or more"),
    (["--target", "fortunes", "--out", "/proc/x.yaml"], "cannot write in /proc"),  # looks writable to root
    (["--target", "fortunes", "--out", "/proc/nope/x.json"], "cannot write in /proc"),
]


def test_bad_objectives_are_one_line_exit_2_and_touch_nothing(study_copy, tmp_path, capsys):
    """One pool for every case (each must leave it as it was, so they cannot disturb each other)."""
    cfg, pool, _, _ = study_copy
    path = str(write_config(cfg, tmp_path / "c.yaml"))
    before = tree_digest(pool.root)
    a_file = tmp_path / "passwd"
    a_file.write_text("not a folder\n")
    (tmp_path / "folder.json").mkdir()
    bad_out = [(["--target", "fortunes", "--out", str(a_file / "w.yaml")], f"{a_file} is a file, not a folder"),
               (["--target", "fortunes", "--out", str(tmp_path / "folder.json")], "is a folder"),
               (["--target", "nope", "--out", str(a_file / "w.yaml")], "is a file, not a folder")]  # the path first
    for args, message in BAD + bad_out:
        code, _, err = run_cli(["optimize", *args, "-c", path], capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, (args, err)
        assert tree_digest(pool.root) == before, args
    assert a_file.read_text() == "not a folder\n"


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
