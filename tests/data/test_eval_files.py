"""Eval sets the user brings (config `eval_sets:`): added to a pool without touching anything else,
scored like any other eval set, contamination counted, bad files refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablate.data.corpus import load_corpus
from ablate.data.units import split_documents

from conftest import run_cli, tree_digest, write_config

LICENSES = Path("/usr/share/common-licenses")  # base-files: on every Debian/Ubuntu machine


def _paragraphs(name: str) -> list[str]:
    text = (LICENSES / name).read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if len(p.strip()) > 40]


def _jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path


def _file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _with_eval_sets(cfg, tmp_path, **sets):
    new = cfg.model_copy(deep=True)
    new.eval_sets = {k: v if isinstance(v, dict) else {"path": str(v)} for k, v in sets.items()}
    return write_config(type(cfg).model_validate(new.model_dump()), tmp_path / "study.yaml")


def test_an_eval_file_is_added_scored_and_leaves_the_pool_as_it_was(study_copy, tmp_path, capsys):
    cfg, pool, units, _ = study_copy
    held = _jsonl(tmp_path / "held.jsonl", _paragraphs("GPL-3"))
    before = tree_digest(pool.root)
    path = _with_eval_sets(cfg, tmp_path, gpl=held)
    code, out, err = run_cli(["units", "split", "-c", str(path)], capsys)
    assert code == 0, err
    after = tree_digest(pool.root)
    changed = {k for k in after if before.get(k) != after[k]}
    # new: the eval set, its cached tokens, the study record and the index; nothing else moved
    assert {k for k in changed if not k.startswith(("eval/eval-gpl.", "cache/tokens/"))} <= {"study.json", "index.duckdb"}
    assert "eval/eval-gpl.npy" in after and set(before) <= set(after)
    code, out, err = run_cli(["score-mixture", units[0], units[2], "--eval", "gpl", "-c", str(path)], capsys)
    assert code == 0, err and "gpl" in out
    code, out, _ = run_cli(["sql", "SELECT eval_set, method, n_tokens FROM mixture_perplexity WHERE eval_set = 'gpl'",
                            "--format", "json", "-c", str(path)], capsys)
    rows = json.loads(out)
    assert {r["method"] for r in rows} >= {"merged", "seed"} and all(r["n_tokens"] > 0 for r in rows)
    code, out, _ = run_cli(["sql", "SELECT source, n_docs, contaminated_docs FROM units WHERE unit_id = 'eval-gpl'",
                            "--format", "json", "-c", str(path)], capsys)
    (row,) = json.loads(out)
    assert row["source"] == str(held) and row["n_docs"] == len(_paragraphs("GPL-3")) and row["contaminated_docs"] == 0


def test_contamination_and_byte_cap(study_copy, tmp_path, capsys):
    cfg, pool, units, _ = study_copy
    corpus = load_corpus(Path(cfg.corpus.path))
    split = split_documents("fortunes", corpus["fortunes"], cfg.units.eval_bytes, cfg.units.split_seed)
    leaked = split.train_docs[:3]  # the first training documents are inside unit fortunes-00
    docs = leaked + _paragraphs("Apache-2.0")
    path = _with_eval_sets(cfg, tmp_path, leak=_jsonl(tmp_path / "leak.jsonl", docs),
                           capped={"path": str(_jsonl(tmp_path / "c.jsonl", docs)), "max_bytes": 2000})
    assert run_cli(["units", "split", "-c", str(path)], capsys)[0] == 0
    meta = json.loads((pool.eval_dir / "eval-leak.json").read_text())
    assert meta["contaminated_docs"] == 3 and meta["n_docs"] == len(docs)
    capped = json.loads((pool.eval_dir / "eval-capped.json").read_text())
    assert 0 < capped["n_docs"] < len(docs) and capped["n_bytes"] <= 2000


@pytest.mark.parametrize("make, fragment", [
    (lambda d: d / "missing.jsonl", "file not found"),
    (lambda d: _file(d / "empty.jsonl", ""), "no non-empty documents"),
    (lambda d: _jsonl(d / "f.jsonl", ["some text " * 50], field="content"), "missing field 'text'"),
    (lambda d: _jsonl(d / "short.jsonl", ["too short"]), "shorter than one eval window"),
    (lambda d: _file(d / "x.csv", "a,b\n"), "unsupported format"),
])
def test_a_bad_eval_file_is_one_line_exit_2_and_the_pool_unchanged(study_copy, tmp_path, capsys, make, fragment):
    cfg, pool, _, _ = study_copy
    path = _with_eval_sets(cfg, tmp_path, mine=make(tmp_path))
    before = tree_digest(pool.root)
    code, _, err = run_cli(["units", "split", "-c", str(path)], capsys)
    assert code == 2 and fragment in err and "mine" in err and len(err.strip().splitlines()) == 1, err
    assert tree_digest(pool.root) == before


def test_the_report_lists_eval_sets_with_contamination(study_copy, tmp_path, capsys):
    cfg, pool, _, _ = study_copy
    path = _with_eval_sets(cfg, tmp_path, gpl=_jsonl(tmp_path / "held.jsonl", _paragraphs("GPL-3")))
    assert run_cli(["units", "split", "-c", str(path)], capsys)[0] == 0
    code, _, err = run_cli(["report", "--out", str(tmp_path / "rep"), "-c", str(path)], capsys)
    assert code == 0, err
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## Eval sets and contamination" in text and f"| gpl | {tmp_path / 'held.jsonl'} |" in text
