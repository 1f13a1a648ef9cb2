"""Task eval sets (multiple choice, cloze): built from real fortunes, added to a pool, scored by the answer's bits
per byte with accuracy beside it, contamination counted, bad files refused in one line naming file:line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ablate.data.task_builders import fortune_ending, write_task

from conftest import run_cli, tree_digest, write_config


def with_tasks(cfg, tmp_path, **sets):
    new = cfg.model_copy(deep=True)
    new.eval_sets = sets
    return write_config(type(cfg).model_validate(new.model_dump()), tmp_path / "study.yaml")


@pytest.fixture
def task_study(study_copy, tmp_path, capsys):
    """The tiny study with a fortune-ending task (60 examples) and a cloze file split in; (cfg path, cfg, pool, units)."""
    cfg, pool, units, _ = study_copy
    task = write_task(fortune_ending(n=60, max_words=25), tmp_path / "fortune_ending.jsonl")
    lines = [json.loads(x) for x in task.read_text().splitlines()][:20]
    cloze = tmp_path / "cloze.txt"
    flat = lambda text: " ".join(text.split())  # noqa: E731 (one line each, no TAB inside)
    cloze.write_text("".join(f"{flat(e['context'])}\t {flat(e['choices'][e['answer']])}\n" for e in lines))
    path = with_tasks(cfg, tmp_path, ending={"path": str(task), "kind": "choice"},
                      clz={"path": str(cloze), "kind": "cloze"})
    code, _, err = run_cli(["units", "split", "-c", str(path)], capsys)
    assert code == 0, err
    return path, cfg, pool, units


def test_a_task_is_stored_hashed_and_its_contamination_counted(task_study, capsys):
    path, cfg, pool, _ = task_study
    assert len(list((pool.cache_dir / "tokens").glob("task-*.npz"))) == 2  # tokenized once, cached
    before = tree_digest(pool.root)
    assert run_cli(["units", "split", "-c", str(path)], capsys)[0] == 0
    after = tree_digest(pool.root)
    # a second split finds everything as it was (the index and the study record are rewritten, same content)
    assert {k for k in set(before) | set(after) if before.get(k) != after.get(k)} <= {"index.duckdb", "study.json"}
    meta = json.loads((pool.eval_dir / "eval-ending.json").read_text())
    assert meta["task"] == "choice" and meta["n_examples"] == 60 and meta["n_choices"] == 240
    assert len(meta["window_tokens"]) == 60 and all(n > 0 for n in meta["window_tokens"])
    assert meta["n_bytes"] == sum(meta["window_bytes"])
    # fortunes-min's own quotes: those inside a training unit are counted (context + true ending = the document)
    assert 0 < meta["contaminated_docs"] < 60
    layout = np.load(pool.eval_dir / "eval-ending.layout.npy")
    assert (np.bincount(layout[:, 0]) == 4).all() and layout[:, 5].sum() == 60
    assert json.loads((pool.eval_dir / "eval-clz.json").read_text())["task"] == "cloze"


def test_score_mixture_on_a_task_gives_answer_bpb_and_accuracy_per_example(task_study, capsys):
    path, cfg, pool, units = task_study
    code, out, err = run_cli(["score-mixture", units[0], units[2], "--eval", "ending", "--eval", "clz", "-c", str(path)], capsys)
    assert code == 0, err
    assert "ending" in out and "accuracy" in out
    code, out, err = run_cli(["sql", "SELECT method, eval_set, bits_per_byte, accuracy, n_examples FROM task_accuracy",
                              "--format", "json", "-c", str(path)], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert {r["method"] for r in rows} >= {"merged", "seed", "union"} and {r["eval_set"] for r in rows} == {"ending"}
    assert all(0 <= r["accuracy"] <= 1 and r["n_examples"] == 60 and r["bits_per_byte"] > 0 for r in rows)
    code, out, _ = run_cli(["sql", "SELECT w.eval_set, w.n_windows FROM window_losses w JOIN mixture_perplexity m "
                            "USING (row_id) WHERE m.method = 'merged'", "--format", "json", "-c", str(path)], capsys)
    assert {(r["eval_set"], r["n_windows"]) for r in json.loads(out)} == {("ending", 60), ("clz", 20)}
    code, _, err = run_cli(["report", "--out", str(path.parent / "rep"), "-c", str(path)], capsys)
    assert code == 0, err
    text = (path.parent / "rep" / "report.md").read_text()
    section = text.split("## Tasks: the correct answer's bits per byte, accuracy beside it")[1].split("\n## ")[0]
    ending, cloze = section.split("**ending** (60 examples, choice)")[1], section.split("**clz** (20 examples, cloze)")[1]
    assert "| merged |" in ending and "| seed |" in ending and "% [" in ending  # accuracy with its interval
    assert "| merged |" in cloze.split("**ending**")[0] and "% [" not in cloze.split("**ending**")[0]  # nothing to choose


@pytest.mark.parametrize("line, fragment", [
    ({"context": "A", "choices": [" b", " c"]}, "missing field 'answer'"),
    ({"context": "A", "choices": [" b", " c"], "answer": 2}, "answer 2 out of range (0..1)"),
    ({"context": "A", "choices": [], "answer": 0}, "'choices' has 0 entries"),
    ({"context": "A", "choices": [" b", "  "], "answer": 0}, "choices 1 is empty"),
    ({"context": 3, "choices": [" b", " c"], "answer": 0}, "'context' must be a string"),
])
def test_a_bad_task_line_is_one_line_naming_file_and_line_and_the_pool_unchanged(study_copy, tmp_path, capsys,
                                                                                  line, fragment):
    cfg, pool, _, _ = study_copy
    good = {"context": "The cat", "choices": [" sat.", " flew."], "answer": 0}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + "\n\n" + json.dumps(line) + "\n")
    path = with_tasks(cfg, tmp_path, mine={"path": str(bad), "kind": "choice"})
    before = tree_digest(pool.root)
    code, _, err = run_cli(["units", "split", "-c", str(path)], capsys)
    assert code == 2 and f"{bad}:3: {fragment}" in err and "'mine'" in err and len(err.strip().splitlines()) == 1, err
    assert tree_digest(pool.root) == before


def test_an_eval_or_task_file_changed_after_the_split_is_refused_where_it_is_used(task_study, capsys):
    """Issue 41.8: a task file changed or broken after `units split` was used by search and optimize without a
    word. On use it is hashed again against the split's; a change is one line naming the file and the command."""
    from ablate.core.config import load_config

    path, _, pool, units = task_study
    task, cloze = (Path(load_config(path).eval_sets[n].path) for n in ("ending", "clz"))
    text = task.read_text()
    search = ["search", "--target", "ending", "--max-size", "1", "-c", str(path)]

    def refused(args, fragment):
        code, _, err = run_cli(args, capsys)
        assert code == 2 and err.count("\n") == 1 and fragment in err and str(task) in err, (args, err)

    task.write_text(text.replace("\n", "\n\n", 1))  # new bytes, the same examples: a plain split takes it
    refused(search, f"changed since units split staged it: run `ablate units split --force -c {path}`")
    assert run_cli(["units", "split", "-c", str(path)], capsys)[0] == 0
    code, out, err = run_cli(search, capsys)
    assert code == 0, err
    task.write_text("{not json\n" + text)  # broken
    for args in (search, ["optimize", "--target", "ending", "-c", str(path)],
                 ["score-mixture", units[0], "--eval", "ending", "-c", str(path)]):
        refused(args, "to stage it again, or restore the file")
    code, _, err = run_cli(["units", "split", "--force", "-c", str(path)], capsys)
    assert code == 2 and f"{task}:1" in err  # the command named says what is wrong with it
    task.write_text("".join(text.splitlines(keepends=True)[:-1]))  # one example fewer: other tokens
    refused(search, "changed since")
    assert run_cli(["units", "split", "-c", str(path)], capsys)[0] == 2  # other data: only --force replaces it
    code, _, err = run_cli(["units", "split", "--force", "-c", str(path)], capsys)
    assert code == 0, err
    assert json.loads((pool.eval_dir / "eval-ending.json").read_text())["n_examples"] == 59
    code, out, err = run_cli(search, capsys)
    assert code == 0, err
    cloze.unlink()
    code, _, err = run_cli(["score-mixture", units[0], "--eval", "clz", "-c", str(path)], capsys)
    assert code == 2 and f"{cloze} is missing" in err and "eval_sets.clz" in err, err
