"""ablate/workflows/demo.py: the demo's task and the whole demo (both ground truths, a validated search)."""

from __future__ import annotations

from pathlib import Path

from ablate.core.config import StudyConfig, load_config
from ablate.store.index import Index

from conftest import copy_study, run_cli, write_config

ROOT = Path(__file__).resolve().parents[2]


def test_demo_trains_both_ground_truths_and_validates_a_weighted_search(study, tmp_path, capsys):
    """`ablate demo` on the tiny study (pair unions only): both truths, per-truth verdict, validated search."""

    cfg, pool = copy_study(study[0], tmp_path / "s")
    cfg.demo_unions, cfg.demo_noise_unions, cfg.demo_search_grid = "pairs", 1, [1.0, 3.0]
    cfg.demo_task = "webster-definition"  # on local files a study gets the demo's task only when it names it
    path = write_config(cfg, tmp_path / "demo.yaml")
    code, out, err = run_cli(["demo", "-c", str(path), "--report", str(tmp_path / "rep")], capsys)
    assert code == 0, err
    _, rows = Index(pool).query("SELECT budget, count(*) FROM models WHERE kind = 'union' GROUP BY ALL")
    assert dict(rows)["unit"] >= 6 + 1 and dict(rows)["sum"] >= 6 + 1  # 6 pairs each, 1 replicate each
    report = (tmp_path / "rep" / "report.md").read_text()
    assert report.index("ground truth: which composition") < report.index("`sum` ground truth")  # unit first
    _, searched = Index(pool).query("SELECT budget, validated, union_ppl, weights FROM searches")
    assert {b for b, *_ in searched} == {"unit"}
    validated = [(u, w) for _, v, u, w in searched if v]
    assert len(validated) in (1, 2) and all(u is not None for u, _ in validated)  # the top one + best weighted
    assert any(len(set(w)) > 1 for _, w in validated)  # the best weighted candidate is checked against its truth
    assert "vs the best of them" in out
    # the demo's task (built offline from the dictionary): scored like an eval set, its own verdict line, accuracy
    line = next(x for x in out.splitlines() if x.startswith("task webster-definition (unit truth, 6 mixtures), `merged`"))
    assert "Spearman" in line and "accuracy of the best union" in line and "(chance 25.0%)" in line
    assert "## Tasks: the correct answer's bits per byte" in report and "**webster-definition** (" in report


def test_an_own_study_gets_the_demo_task_only_when_its_config_names_it(tmp_path, capsys):
    from ablate.workflows.demo import add_demo_task

    # the config docs/own-data.md makes (`config show` on local files) says no task, and the demo adds none
    code, out, err = run_cli(["config", "show", "--set", "corpus.source=files", "--set", "corpus.path=my_corpus"],
                             capsys)
    assert code == 0, err
    (tmp_path / "my_study.yaml").write_text(out)
    own = load_config(tmp_path / "my_study.yaml")
    assert "demo_task: null" in out and own.demo_task is None
    assert add_demo_task(own, log=lambda *a: None) is None and not own.eval_sets
    # named, it is theirs; the demo's own config (the Debian corpus) keeps it
    named = load_config(None, ["corpus.source=files", "demo_task=fortune-ending"])
    assert named.demo_task == "fortune-ending"
    assert load_config(ROOT / "configs" / "demo.yaml").demo_task == StudyConfig().demo_task == "webster-definition"
