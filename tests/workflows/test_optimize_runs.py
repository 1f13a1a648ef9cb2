"""ablate/workflows/optimize_runs.py: optimized weights validated by retraining (`ablate optimize --validate`)."""

from __future__ import annotations

import json
import math

import pytest

from ablate.store.index import Index
from ablate.store.results import now

from conftest import run_cli, write_config

UNITS = ["fortunes-00", "fortunes-01", "literature-00", "literature-01"]


def _rows(pool, sql):
    cols, rows = Index(pool).query(sql)
    return [dict(zip(cols, r)) for r in rows]


def test_planted_target_validated_and_written_out(study_copy, tmp_path, capsys):
    """Eval set = the literature units' domain: the optimized weight goes there; the row, the file and the
    retrained unions say so, with one verdict line; a plain rerun reuses the stored row and keeps the proof;
    --force recomputes the same weights and keeps it too; the report shows it."""
    cfg, pool, _, _ = study_copy
    path = str(write_config(cfg, tmp_path / "c.yaml"))
    code, out, err = run_cli(["optimize", "--target", "literature", "--out", str(tmp_path / "w.json"),
                              "--validate", "-c", path], capsys)
    assert code == 0, err
    row = _rows(pool, "SELECT * FROM optimizations")[0]
    optimized = dict(zip(row["units"], row["optimized_weights"]))
    assert optimized["literature-00"] + optimized["literature-01"] > 0.8, optimized
    assert sum(row["weights"]) == pytest.approx(1) and row["objective"] == "literature"
    assert row["held_optimized"] is not None and row["fit_optimized"] < row["fit_uniform"]
    assert row["validated"] and row["unions_compared"] >= 3 and row["union_uniform"] is not None
    # the one verdict, in the output and the table
    gain, band = row["union_uniform"] - row["union_optimized"], row["noise_threshold"]
    assert row["beats_uniform"] == (gain > band) and row["realized_gain"] == pytest.approx(gain)
    line = (f"optimized beats uniform beyond the noise band: {'yes' if gain > band else 'no'} "
            f"(gain {100 * math.expm1(gain):+.2f} %, band ±{100 * math.expm1(band):.2f} %)")
    assert row["verdict"] == line and out.rstrip().endswith(line)
    doc = json.loads((tmp_path / "w.json").read_text())
    recommended = dict(zip(row["units"], row["weights"]))
    assert doc["recommended"] == row["recommended"] and doc["budget_tokens"] == 4096
    assert doc["weights"] == {u: w for u, w in recommended.items() if w > 0}
    assert doc["optimized"]["weights"] == {u: w for u, w in optimized.items() if w > 0}
    assert sum(doc["tokens"].values()) == 4096 == sum(doc["optimized"]["tokens"].values())
    by_domain = {d: sum(w for u, w in recommended.items() if u.startswith(d)) for d in ("fortunes", "literature")}
    assert doc["domains"]["weights"] == pytest.approx({d: w for d, w in by_domain.items() if w > 0})
    assert "retrained on the held windows" in out and "stored as opt-" in out
    unions = list(pool.iter_metas("union"))
    assert any(m["units"] == UNITS and m["budget"] == "unit" for m in unions)  # the uniform union
    assert any(m.get("replicate") == 1 and m["budget"] == "unit" for m in unions)  # the noise band
    # no trained union but the fixture's pair at `sum`: no error measured, the stated fallback decides, no "±" RMS
    assert row["proxy_error"] is None and row["gate_rule"] == "protocol rate" and row["calibration"] is None
    assert "the proxy is not calibrated here" in out and "root mean square" not in out
    # the old gate's answer beside the new one (issue 39.3)
    assert row["gate_rule_old"] == "window noise + prior" and row["recommended_old"] in ("optimized", "uniform")
    assert f"would recommend: {row['recommended_old']}" in out
    # validated: the retrained truth decides what to train with, and the file written after it carries it (39.5)
    assert out.index("validating: 3 trainings of 4,096 tokens") < out.index("stored as opt-")  # cost said first
    assert row["recommended"] == ("optimized" if row["beats_uniform"] else "uniform")
    assert doc["validation"]["verdict"] == line and doc["validation"]["beats_uniform"] == row["beats_uniform"]
    assert out.index("retrained on the held windows") < out.index("weights written to")

    code, again_out, err = run_cli(["optimize", "--target", "literature", "-c", path], capsys)  # a plain rerun
    assert code == 0, err
    again = _rows(pool, "SELECT * FROM optimizations")
    assert len(again) == 1 and again[0]["row_id"] == row["row_id"] and again[0]["created_at"] == row["created_at"]
    assert again[0]["validated"] and again[0]["union_optimized"] == row["union_optimized"]  # the proof is kept
    assert again[0]["noise_threshold"] == row["noise_threshold"] and again[0]["verdict"] == line
    assert f"reused {row['row_id']}" in again_out and again_out.rstrip().endswith(line)

    code, forced_out, err = run_cli(["optimize", "--target", "literature", "--force", "-c", path], capsys)
    assert code == 0, err
    forced = _rows(pool, "SELECT * FROM optimizations")
    assert len(forced) == 1 and forced[0]["created_at"] > row["created_at"] and "stored as" in forced_out
    assert forced[0]["optimized_weights"] == row["optimized_weights"]  # deterministic: same weights, proof kept
    assert forced[0]["validated"] and forced[0]["union_optimized"] == row["union_optimized"]
    # the validation trained the uniform union (the reference) and the weighted one: 1 union to measure, not 3
    assert forced[0]["proxy_error_unions"] == 1 and forced[0]["proxy_error"] is None
    assert "root mean square" not in forced_out and "this pool has 1" in forced_out

    code, _, err = run_cli(["report", "--out", str(tmp_path / "rep"), "-c", path], capsys)
    assert code == 0, err
    report = (tmp_path / "rep" / "report.md").read_text()
    section = report[report.index("## Optimized mixtures"):]
    assert "literature" in section and line.split(": ", 1)[1].split(" (")[0] in section
    assert f"{100 * math.expm1(gain):+.2f} %" in section and row["recommended"] in section


def test_a_recompute_with_other_weights_keeps_the_validated_row(study_copy, tmp_path, capsys):
    """--force after members changed in place (simulated: the stored validated row holds other weights): the new
    row takes the id, the validated one stays in the table under its own id, superseded_by the new one."""
    from ablate.store.results import read_optimization_row, write_optimization_row

    cfg, pool, _, _ = study_copy
    path = str(write_config(cfg, tmp_path / "c.yaml"))
    args = ["optimize", "--target", "literature", "--steps", "5", "-c", path]
    assert run_cli(args, capsys)[0] == 0
    row = _rows(pool, "SELECT row_id FROM optimizations")[0]
    stored = read_optimization_row(pool, row["row_id"])
    write_optimization_row(pool, dict(stored, optimized_weights=[0.7, 0.1, 0.1, 0.1], validated=True,
                                      union_optimized=5.0, union_uniform=5.1, noise_threshold=0.01,
                                      verdict="optimized beats uniform beyond the noise band: yes", created_at=now()))
    code, out, err = run_cli([*args, "--force"], capsys)
    assert code == 0, err
    rows = {r["row_id"]: r for r in _rows(pool, "SELECT * FROM optimizations")}
    assert len(rows) == 2 and not rows[row["row_id"]]["validated"]
    old = next(r for rid, r in rows.items() if rid != row["row_id"])
    assert old["superseded_by"] == row["row_id"] and old["validated"] and old["union_optimized"] == 5.0
    assert old["row_id"].startswith(row["row_id"] + "~")


def test_validate_k_retrains_the_top_candidates_and_keeps_the_best(study_copy, tmp_path, capsys):
    """`--validate 2 --route ensemble`: the cost is said before any work, the top 2 candidates, a replicate of #1 and
    the uniform union are trained; the row and the file (written after the retraining) name both candidates with
    their realized gains, and recommend the best retrained one exactly when it beats uniform beyond the band."""
    cfg, pool, _, _ = study_copy
    path = str(write_config(cfg, tmp_path / "c.yaml"))
    code, out, err = run_cli(["optimize", "--target", "literature", "--route", "ensemble", "--validate", "2",
                              "--out", str(tmp_path / "w.yaml"), "-c", path], capsys)
    assert code == 0, err
    assert out.index("validating: 4 trainings of 4,096 tokens each (2 candidates") < out.index("stored as opt-")
    row = _rows(pool, "SELECT * FROM optimizations")[0]
    picks = json.loads(row["validated_candidates"])
    found = json.loads(row["candidates"])
    assert [p["rank"] for p in picks] == [1, 2] and [p["weights"] for p in picks] == [c["weights"] for c in found[:2]]
    best = max(picks, key=lambda p: p["realized_gain"])
    band = row["noise_threshold"]
    assert all(p["beats_uniform"] == (p["realized_gain"] > band) for p in picks)
    assert row["recommended"] == ("optimized" if best["beats_uniform"] else "uniform")
    assert row["weights"] == (best["weights"] if best["beats_uniform"] else [0.25] * 4)
    assert row["verdict"].startswith(f"the best of 2 retrained candidates (#{best['rank']}, ")
    assert "trained 2 candidates: #1 " in out and out.rstrip().endswith(row["verdict"])
    import yaml
    doc = yaml.safe_load((tmp_path / "w.yaml").read_text())
    assert [c["rank"] for c in doc["validation"]["candidates"]] == [1, 2]
    assert doc["validation"]["candidates"][0]["realized_gain"] == pytest.approx(picks[0]["realized_gain"])
    assert doc["weights"] == {u: w for u, w in zip(row["units"], row["weights"]) if w > 0}
    assert doc["recommended"] == row["recommended"]
    # a plain rerun keeps what the validation decided, and says which candidates were trained
    code, again, err = run_cli(["optimize", "--target", "literature", "--route", "ensemble", "-c", path], capsys)
    assert code == 0 and "trained 2 candidates" in again and again.rstrip().endswith(row["verdict"]), err
    assert _rows(pool, "SELECT weights FROM optimizations")[0]["weights"] == row["weights"]
