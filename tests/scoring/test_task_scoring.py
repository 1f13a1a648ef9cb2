"""Scoring a task: the packed forward equals a plain loop over choices, the batched evaluator's masked windows equal
it, and sweep --target / search / optimize take a task like any eval set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ablate.data.task_builders import fortune_ending, write_task
from ablate.models.model import load_member
from ablate.optimize.losses import set_nll
from ablate.scoring.batched import EvalWindows, ModelStack
from ablate.scoring.tasks import choice_nll, choice_nll_loop, correct_choices, evaluate_task
from ablate.study.context import load_study

from conftest import run_cli, write_config


@pytest.fixture(scope="module")
def task_pool(study, tmp_path_factory):
    """The tiny study copied, with a 40-example fortune-ending task split in: (config path, cfg, pool, units)."""
    from ablate.data.corpus import study_corpus
    from ablate.data.units import split_units

    from conftest import copy_study

    root = tmp_path_factory.mktemp("tasks")
    cfg, pool = copy_study(study[0], root / "copy")
    task = write_task(fortune_ending(n=40, max_words=25, seed=1), root / "ending.jsonl")
    cfg.eval_sets = {"ending": {"path": str(task), "kind": "choice"}}
    cfg = type(cfg).model_validate(cfg.model_dump())
    split_units(cfg, pool, study_corpus(cfg), log=lambda *a: None)
    return write_config(cfg, root / "study.yaml"), cfg, pool, study[2]


def test_one_pass_per_choice_set_equals_a_loop_over_choices_and_the_masked_windows(task_pool):
    _, cfg, pool, units = task_pool
    study = load_study(cfg, pool, ["ending"])
    task = study.tasks["ending"]
    model = load_member(pool, study.unit_member(units[0]))
    packed, per_token = choice_nll(model, task, batch_size=10, per_token=True)
    np.testing.assert_allclose(packed, choice_nll_loop(model, task), rtol=1e-5)
    # the answer's per-token losses add up to its sum; batch size changes nothing but the packing
    np.testing.assert_allclose([t.sum() for t in per_token], packed[task.answers], rtol=1e-5)
    np.testing.assert_allclose(choice_nll(model, task, batch_size=3)[0], packed, rtol=1e-5)
    stats = evaluate_task(model, task, batch_size=16)
    assert stats["n_tokens"] == sum(json.loads((pool.eval_dir / "eval-ending.json").read_text())["window_tokens"])
    assert np.isclose(stats["bits_per_byte"], packed[task.answers].sum() / np.log(2) / task.answer_bytes.sum())
    # the batched evaluator (sweep, search) sees the task as masked windows: the same answer sums
    stack = ModelStack(model, slots=2)
    stack.load_state(0, model.state_dict())
    stack.load_state(1, model.state_dict())
    windows = EvalWindows.from_task(task, "ending").shuffled()
    nll = stack.window_nll(EvalWindows.from_task(task, "ending"), batch_size=8)
    np.testing.assert_allclose(nll[0], stats["window_nll"], rtol=1e-5)
    assert (nll[0] == nll[1]).all() and len(windows) == task.n_examples
    # optimize's loss through the merge (gradients) reads the same masked windows: the answer's NLL, nothing else
    whole = EvalWindows.from_task(task, "ending")
    total, n_pred = set_nll(model, whole.full, 8, grad=True, mask=whole.mask)
    assert n_pred == stats["n_tokens"] and np.isclose(total, stats["nll_sum"], rtol=1e-5)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_accuracy_is_length_normalized_and_cloze_has_none(task_pool):
    _, cfg, pool, _ = task_pool
    task = load_study(cfg, pool, ["ending"]).tasks["ending"]
    nll = task.choice_bytes.astype(float) * 2.0  # every choice equally likely per byte ...
    nll[task.answers] -= 0.5  # ... but the answer a little better, though longer answers have larger sums
    assert correct_choices(task, nll).all()
    nll[task.answers] += 1.0
    assert not correct_choices(task, nll).any()


def test_sweep_target_search_and_optimize_take_a_task(task_pool, capsys):
    path, _, _, units = task_pool
    code, out, err = run_cli(["sweep", "--max-size", "2", "--units", ",".join(units[:3]), "--target", "ending",
                              "-c", str(path)], capsys)
    assert code == 0, err
    assert "ending" in out
    code, out, err = run_cli(["search", "--target", "ending", "--max-size", "2", "-c", str(path)], capsys)
    assert code == 0, err
    code, out, err = run_cli(["search", "--target", "ending", "--method", "ensemble", "--max-size", "2",
                              "-c", str(path)], capsys)
    assert code == 0, err
    # a member alone: its ensemble (cached answer-token losses) and its merge (the batched masked windows) agree
    code, out, _ = run_cli(["sql", "SELECT method, mixture, nll_sum, n_tokens FROM mixture_perplexity WHERE k = 1 AND "
                            "eval_set = 'ending' AND method IN ('merged', 'ensemble')", "--format", "json", "-c",
                            str(path)], capsys)
    got = {}
    for r in json.loads(out):
        got.setdefault(tuple(r["mixture"]), {})[r["method"]] = (r["nll_sum"], r["n_tokens"])
    both = [v for v in got.values() if len(v) == 2]
    assert both and all(np.isclose(v["merged"][0], v["ensemble"][0], rtol=1e-4) and
                        v["merged"][1] == v["ensemble"][1] for v in both)
    code, out, err = run_cli(["sweep", "--screen", "--units", ",".join(units[:3]), "--eval", "ending", "--force",
                              "-c", str(path)], capsys)
    assert code == 0, err
    for route in ("merged", "ensemble"):  # gradients of the answer's NLL: through the merge, or the mixed cache
        code, out, err = run_cli(["optimize", "--target", "ending", "--units", f"{units[0]},{units[2]}", "--route",
                                  route, "--set", "optimize.steps=2", "-c", str(path)], capsys)
        assert code == 0, err
    code, out, _ = run_cli(["sql", "SELECT route, fit_uniform, held_uniform FROM optimizations", "--format", "json",
                            "-c", str(path)], capsys)
    rows = {r["route"]: r for r in json.loads(out)}
    # both routes measure the uniform weights on the same examples: the merge of two members vs their ensemble,
    # both answer-token log perplexities of the same order (a broken mask would count the context: far apart)
    assert set(rows) == {"merged", "ensemble"} and all(0 < r["held_uniform"] < 10 for r in rows.values())
    assert abs(rows["merged"]["held_uniform"] - rows["ensemble"]["held_uniform"]) < 0.05


def test_score_mixture_gives_accuracy_where_the_sweep_stored_bits_per_byte_only(study, task_pool, tmp_path, capsys):
    from ablate.data.corpus import study_corpus
    from ablate.data.units import split_units

    from conftest import copy_study

    cfg, pool = copy_study(study[0], tmp_path / "copy")  # the task split into a pool none of the tests here scored
    cfg = type(cfg).model_validate({**cfg.model_dump(), "eval_sets": task_pool[1].model_dump()["eval_sets"]})
    split_units(cfg, pool, study_corpus(cfg), log=lambda *a: None)
    path, units = write_config(cfg, tmp_path / "study.yaml"), study[2]
    pair = [units[1], units[3]]
    code, _, err = run_cli(["sweep", "--max-size", "2", "--units", ",".join(pair), "--eval", "ending", "-c", str(path)],
                           capsys)
    assert code == 0, err
    query = (f"SELECT count(*) AS n FROM task_accuracy WHERE method = 'merged' AND eval_set = 'ending' AND "
             f"mixture = ['{pair[0]}', '{pair[1]}']")
    code, out, _ = run_cli(["sql", query, "--format", "json", "-c", str(path)], capsys)
    assert json.loads(out)[0]["n"] == 0  # the sweep ran the answers only: its row has no accuracy
    code, out, err = run_cli(["score-mixture", *pair, "--eval", "ending", "-c", str(path)], capsys)
    assert code == 0, err
    merged = [line for line in out.splitlines() if line.strip("│ ").startswith("merged ")]
    assert merged and "%" in merged[0], out  # the choices' losses computed for the reused row, not "-"
    code, out, _ = run_cli(["sql", query, "--format", "json", "-c", str(path)], capsys)
    assert json.loads(out)[0]["n"] == 1  # task_accuracy (and so the report's Tasks tables) holds the merged model
