"""The bad-input catalogue: every command, one clear line, the documented exit code, pool untouched.

Exit codes (README): 2 = bad input (arguments, config, names, data the user supplied),
1 = runtime failure (corrupted or missing files, disk, permissions). Each case asserts
the code, exactly one `error: ...` line on stderr, no traceback, and a pool directory
byte-identical before and after.
"""

from __future__ import annotations

import errno
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ablate.store.index import Index
from ablate.store.pool import atomic_write_json, sha256_file

from conftest import run_cli, tree_digest, write_config


def _member(pool, unit):
    return next(m for m in pool.iter_metas("unit") if m["units"] == [unit])


def _rewrite_member(pool, unit, edit_state=None, edit_meta=None):
    meta = _member(pool, unit)
    path = pool.weights_path(meta["model_id"])
    state = load_file(str(path))
    if edit_state:
        edit_state(state)
    save_file(state, str(path))
    meta["sha256"], meta["size"] = sha256_file(path), path.stat().st_size
    if edit_meta:
        edit_meta(meta)
    atomic_write_json(path.parent / "meta.json", meta)


def steps(*effects_then_args):
    """Run set-up side effects (already evaluated, in order) and return the command, the last item."""
    return effects_then_args[-1]


def _corpus_append(cfg, domain, raw: bytes):
    with open(f"{cfg.corpus.path}/{domain}.jsonl", "ab") as fh:
        fh.write(raw)


def _foreign_unit(cfg, pool, tmp, unit):
    """Replace a unit with the same unit cut by another tokenizer (another study's pool)."""
    from ablate.data.corpus import study_corpus
    from ablate.data.units import split_units
    from ablate.store.pool import Pool

    other = cfg.model_copy(deep=True)
    other.pool = str(tmp / "other-pool")
    other.tokenizer.vocab_size = 400
    split_units(other, Pool(other.pool), study_corpus(other), log=lambda *a: None)
    for ext in (".npy", ".json"):
        shutil.copy(tmp / "other-pool" / "units" / f"{unit}{ext}", pool.units_dir / f"{unit}{ext}")


def _set(section, field, value):
    def setup(cfg, pool, tmp):
        setattr(getattr(cfg, section), field, value)
        return ["units", "split"]
    return setup


def _yaml(text):
    def setup(cfg, pool, tmp):
        (tmp / "c.yaml").write_text(text)
        return ["seed"], "raw"
    return setup


def _nan_member(state):
    key = next(iter(state))
    state[key][0] = float("nan")


def _bigger_norm(state):
    key = next(k for k in state if k.endswith("norm.weight"))
    state[key] = torch.ones(state[key].numel() + 1)


def _disk_full(target):
    def setup(cfg, pool, tmp, monkeypatch=None):
        def boom(path, data):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        monkeypatch.setattr(target, boom)
        return None
    return setup


SCORE = ["score-mixture", "fortunes-00", "literature-00"]

CASES = {
    # corpus
    "corpus: unknown source": (2, lambda c, p, t: ["corpus", "build", "gutenberg", "--out", str(t / "x")]),
    "corpus: unknown debian domain": (2, lambda c, p, t: ["corpus", "build", "debian", "--out", str(t / "x"),
                                                          "--domain", "klingon"]),
    # config
    "config: invalid YAML": (2, _yaml("train: {lr: 1e-3\n")),
    "config: wrong type": (2, _yaml("train:\n  lr: [1, 2]\n")),
    "config: out of range": (2, _yaml("train:\n  batch_size: 0\n")),
    "config: unknown key": (2, _yaml("trian:\n  lr: 0.1\n")),
    "config: file missing": (2, lambda c, p, t: (["seed", "-c", str(t / "missing.yaml")], "raw")),
    "config: --set without =": (2, lambda c, p, t: ["seed", "--set", "train.lr"]),
    # units split
    "units: corpus missing": (2, lambda c, p, t: steps(setattr(c.corpus, "path", str(t / "none")), ["units", "split"])),
    "units: unknown domain": (2, _set("units", "domains", ["fortunes", "klingon"])),
    "units: domain name with path separator": (2, _set("units", "domains", ["fortunes", "../evil"])),
    "units: budget larger than domain": (2, _set("units", "unit_tokens", 10_000_000)),
    "units: more units than data": (2, _set("units", "units_per_domain", 50)),
    "units: eval set takes whole domain": (2, _set("units", "eval_bytes", 10_000_000)),
    "units: invalid JSONL line": (2, lambda c, p, t: steps(_corpus_append(c, "fortunes", b"{oops\n"), ["units", "split"])),
    "units: non-UTF-8 line": (2, lambda c, p, t: steps(_corpus_append(c, "fortunes", b'{"text": "\xff\xfe", "domain": "fortunes"}\n'),
                                                  ["units", "split"])),
    "units: empty domain": (2, lambda c, p, t: steps(_corpus_append(c, "empty", b'{"text": " ", "domain": "empty"}\n'),
                                                setattr(c.units, "domains", ["fortunes", "empty"]), ["units", "split"])),
    # training
    "train: unknown unit": (2, lambda c, p, t: ["train-partition", "poetry-00"]),
    "train: unit with path separator": (2, lambda c, p, t: ["train-partition", "../../etc/passwd"]),
    "train: no unit given": (2, lambda c, p, t: ["train-partition"]),
    "train: duplicate unit": (2, lambda c, p, t: ["train-mixture", "fortunes-00", "fortunes-00"]),
    "train: malformed mixture string": (2, lambda c, p, t: ["train-mixture", "fortunes-00,literature-00"]),
    "train: seed missing": (2, lambda c, p, t: steps([(p.member_dir(m["model_id"]) / "meta.json").unlink()
                                                for m in list(p.iter_metas("seed"))], ["train-partition", "fortunes-01", "--force"])),
    "train: unit from another tokenizer": (2, lambda c, p, t: steps(_foreign_unit(c, p, t, "fortunes-01"),
                                                                    ["train-partition", "fortunes-01", "--force"])),
    "train: pool is a file": (1, lambda c, p, t: steps((t / "file").write_text("x"), setattr(c, "pool", str(t / "file")),
                                                  ["train-partition", "fortunes-01"])),
    "train: corrupted meta.json": (1, lambda c, p, t: steps(
        (p.member_dir(_member(p, "fortunes-01")["model_id"]) / "meta.json").write_text("{broken"),
        ["train-partition", "fortunes-01"])),
    "train: truncated seed weights": (1, lambda c, p, t: steps(
        p.weights_path(next(p.iter_metas("seed"))["model_id"]).write_bytes(
            p.weights_path(next(p.iter_metas("seed"))["model_id"]).read_bytes()[:999]),
        ["train-partition", "fortunes-01", "--force"])),
    # scoring
    "score: NaN weight": (2, lambda c, p, t: SCORE + ["--weights", "1,nan"]),
    "score: negative weight": (2, lambda c, p, t: SCORE + ["--weights", "1,-2"]),
    "score: all-zero weights": (2, lambda c, p, t: SCORE + ["--weights", "0,0"]),
    "score: wrong number of weights": (2, lambda c, p, t: SCORE + ["--weights", "1,2,3"]),
    "score: non-numeric weights": (2, lambda c, p, t: SCORE + ["--weights", "one,two"]),
    "score: unknown eval set": (2, lambda c, p, t: SCORE + ["--eval", "klingon"]),
    "score: eval set shorter than a window": (2, lambda c, p, t: steps(
        np.save(p.eval_dir / "eval-fortunes.npy", np.zeros(10, dtype=np.uint16)), SCORE)),
    "score: empty eval set": (2, lambda c, p, t: steps(
        np.save(p.eval_dir / "eval-fortunes.npy", np.zeros(0, dtype=np.uint16)), SCORE)),
    "score: members from different seeds": (2, lambda c, p, t: steps(
        _rewrite_member(p, "literature-00", edit_meta=lambda m: m.update(seed_id="seed-other")), SCORE)),
    "score: shape mismatch": (2, lambda c, p, t: steps(_rewrite_member(p, "literature-00", _bigger_norm), SCORE)),
    "score: NaN weights in a member": (1, lambda c, p, t: steps(_rewrite_member(p, "literature-00", _nan_member), SCORE)),
    "score: untrained unit": (2, lambda c, p, t: steps(shutil.rmtree(p.member_dir(_member(p, "fortunes-01")["model_id"])),
                                                  ["score-mixture", "fortunes-00", "fortunes-01"])),
    "score: truncated member": (1, lambda c, p, t: steps(
        p.weights_path(_member(p, "literature-00")["model_id"]).write_bytes(b"\x00" * 100), SCORE)),
    "score: disk full": (1, "disk-full"),
    # sweep, export, sql, report
    "search: --method short outside the protocol": (2, lambda c, p, t: ["search", "--target", "fortunes",
                                                                           "--method", "short"]),
    "sweep: --max-size 0": (2, lambda c, p, t: ["sweep", "--max-size", "0"]),
    "sweep: --jobs 0": (2, lambda c, p, t: ["sweep", "--jobs", "0"]),
    "sweep: unknown unit": (2, lambda c, p, t: ["sweep", "--units", "fortunes-00,poetry-00"]),
    "export: --out not empty": (2, lambda c, p, t: steps((t / "out").mkdir(), (t / "out" / "x").write_text("x"),
                                                    ["export-mixture", "fortunes-00", "--out", str(t / "out")])),
    "sql: write statement": (2, lambda c, p, t: ["sql", "DELETE FROM models"]),
    "sql: syntax error": (2, lambda c, p, t: ["sql", "SELEKT 1"]),
    "sql: unknown format": (2, lambda c, p, t: ["sql", "SELECT 1", "--format", "xlsx"]),
    "report: no pool": (2, lambda c, p, t: steps(setattr(c, "pool", str(t / "nopool")), ["report", "--out", str(t / "r")])),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, study_copy, tmp_path, capsys, monkeypatch):
    cfg, pool, _, _ = study_copy
    code, setup = CASES[name]
    Index(pool).rebuild()
    if setup == "disk-full":
        _disk_full("ablate.store.results.atomic_write_bytes")(cfg, pool, tmp_path, monkeypatch)
        out = SCORE
    else:
        out = setup(cfg, pool, tmp_path)
    raw = isinstance(out, tuple)
    args = out[0] if raw else out
    if not raw:
        args = [*args, "-c", str(write_config(cfg, tmp_path / "c.yaml"))]
    elif "-c" not in args:
        args = [*args, "-c", str(tmp_path / "c.yaml")]
    before = tree_digest(pool.root)
    got, stdout, stderr = run_cli(args, capsys)
    assert got == code, (stdout, stderr)
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    assert tree_digest(pool.root) == before


def test_catalogue_is_large_enough():
    assert len(CASES) >= 30


def test_an_absurd_token_budget_is_one_clear_line(study_copy, tmp_path, capsys):
    """10^13 tokens used to end in "internal error: MemoryError" after minutes of drawing: now exit 2 at once."""
    cfg, pool, _, _ = study_copy
    path = write_config(cfg, tmp_path / "c.yaml")
    before = tree_digest(pool.root)
    code, _, err = run_cli(["train-mixture", "fortunes-00", "literature-00", "--tokens", "10000000000000",
                            "-c", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "MemoryError" not in err, err
    assert "--tokens 10000000000000" in err and "passes over unit" in err and "lower --tokens" in err
    assert tree_digest(pool.root) == before
