"""FIDELITY.md's "Optimized mixtures, retrained": goals counted right, the step size chosen leaving each study out,
the section replaced in place (nothing trains here: synthetic cases)."""

from __future__ import annotations

import json

from ablate.fidelity.weights_report import HEADING, leave_one_study_out, section, write_section
from ablate.workflows.weights_runs import validated


def _case(gain, best, noise=0.001, grid=0.0, reg=0.0):
    return {"objective": "a", "recommended": "optimized", "held_predicted_gain": gain, "realized_gain": gain,
            "recommended_gain": gain, "grid_gain": grid, "regression_gain": reg, "best_gain": best,
            "captured": gain / best if best > 0 else None, "grid_captured": grid / best if best > 0 else None,
            "regression_captured": reg / best if best > 0 else None, "regret": best - gain,
            "grid_regret": best - grid, "noise": noise, "unions_compared": 12}


def _study(name, gains, best=0.1):
    return {"study": name, "units": ["u-00", "v-00"], "cases": [_case(g, best) for g in gains]}


def test_goals_and_the_left_out_choice():
    low = [_study("s1", [0.05, 0.05]), _study("s2", [0.09, 0.085]), _study("s3", [0.02, -0.01])]
    high = [_study("s1", [0.09, 0.09]), _study("s2", [0.01, 0.02]), _study("s3", [0.08, 0.09])]
    picks = {p["study"]: p["chosen_lr"] for p in leave_one_study_out({0.1: low, 0.3: high})}
    # s1 held out: on s2+s3, 0.1 scores 0.09 + 0.005 ... vs 0.3: 0.015 + 0.085 -> 0.3
    assert picks == {"s1": 0.3, "s2": 0.3, "s3": 0.1}
    text = section(low, 60, {0.1: low, 0.3: high})
    assert "never worse than the uniform union beyond the noise band: 5/6" in text
    assert "Captured >= 80 % of the best known gain over uniform: 2/6" in text
    assert "| s3 | 0.1 |" in text


def test_the_section_is_replaced_in_place(tmp_path):
    path = tmp_path / "FIDELITY.md"
    path.write_text("# Fidelity\n\nintro\n\n## Next part\n\nkept\n")
    studies = [_study("s1", [0.05])]
    write_section(path, studies, 30)
    write_section(path, studies, 30)
    text = path.read_text()
    assert text.count(HEADING) == 1 and "kept" in text and text.startswith("# Fidelity")
    assert "`ablate fidelity --weights-only` (this run" in text and "were not rerun" not in text
    write_section(path, [s | {"targets": "eval-only"} for s in studies], 30)  # the command that ran, named
    text = path.read_text()
    assert "`ablate fidelity --weights-only --weights-targets eval-only`" in text and "were not rerun" in text
    assert json.loads((tmp_path / "FIDELITY-weights.json").read_text())["optimized_mixtures"][0]["study"] == "s1"
    write_section(path, studies, 30, configs=["configs/fidelity-heldout/x.yaml"])  # a study named on the command line
    assert f"`ablate fidelity configs/fidelity-heldout/x.yaml --weights-only --out {path}`" in path.read_text()


def test_validate_k_follows_the_best_retrained_candidate_that_beats_uniform_beyond_noise():
    # candidates #1..#3 retrained: #1 inside the noise threshold, #2 the best, #3 between
    got = validated([0.01, 0.03, 0.02], threshold=0.015, best_gain=0.04)
    assert got["validate1_gain"] == 0.0 and got["validate1_captured"] == 0.0  # #1 alone: uniform is followed
    assert got["validate3_gain"] == 0.03 and got["validate3_captured"] == 0.75 and got["validate3_trained"] == 3
    assert validated([0.01], 0.0, 0.0)["validate3_captured"] is None  # no gain to capture
    cases = [_case(0.05, 0.1) | validated([0.05, 0.09], 0.01, 0.1) for _ in range(2)]
    text = section([{"study": "s1", "units": ["u-00", "v-00"], "cases": cases}], 60)
    goals = text.split("### Goals, checked")[1]
    assert goals.index("Following the recommendation") < goals.index("Optimized weights")  # it leads
    assert "K = 0 (the gate) captured >= 80 % 0/2" in goals and "K = 3 captured >= 80 % 2/2" in goals
