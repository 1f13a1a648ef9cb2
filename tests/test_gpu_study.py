"""`make gpu-study` at tiny sizes, end to end: the script the GPU machine runs, so that it cannot rot on a CPU.

How to run:
    .venv/bin/python -m pytest -q tests/test_gpu_study.py     # ~20 s on 2 cores

bench/gpu_study.py packs the Debian corpus (and the task file) here, then `run` unpacks that pack into
another folder, as on a machine without the Debian packages, and runs the whole fidelity study of
configs/fidelity-gpu/gpu-study.yaml with `--size tiny`: the section and its JSON must hold rows for every
kind of target the GPU study reports (covered, eval-only new to the seed, seed-known, the task), every proxy
the full study scores (`private` included: one replicate member per unit).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import warm

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_study.py"


def gpu_study(tmp_path: Path, *args: str, corpus: Path) -> str:
    # the script and its children (config loader, study) are warm forks: five cold interpreters took ~25 s
    cmd = [warm.python(), str(SCRIPT), *args, "--size", "tiny", "--carry", str(tmp_path / "carry"),
           "--set", f"pool={tmp_path / 'pool'}", "--set", f"corpus.path={corpus}"]
    env = {**os.environ, "ABLATE_BENCH_PYTHON": str(warm.python())}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return res.stdout


def test_the_gpu_study_packs_its_corpus_and_runs_from_the_pack(tmp_path):
    gpu_study(tmp_path, "pack", corpus=tmp_path / "here" / "corpus")
    assert (tmp_path / "carry" / "corpus.tar.xz").stat().st_size > 10_000

    out = tmp_path / "out"
    log = gpu_study(tmp_path, "run", "--out", str(out), corpus=tmp_path / "there" / "corpus")
    assert "unpacked" in log  # read from the pack, not rebuilt from the Debian packages
    assert (tmp_path / "there" / "tasks" / "webster-definition.jsonl").exists()

    section = (out / "FIDELITY.md").read_text()
    assert section.startswith("## Study: gpu-study")
    for line in ("**Seed-known targets", "**Eval-only targets new to the seed", "**Task targets", "**Verdict"):
        assert line in section, line
    result = json.loads((out / "FIDELITY-gpu-study.json").read_text())
    assert len(result["units"]) == 3 and result["n_truths"] == 4
    rows = [r for r in result["rows"] if r["budget"] == "unit" and r["m"] == 0]
    kinds = {(r["target"], r["eval_set"]) for r in rows if r["proxy"] == "merged"}
    assert {("covered", d) for d in ("fiction", "bible", "computing")} <= kinds
    assert ("eval-only", "quotes") in kinds and ("seed-known", "webster") in kinds
    assert any(r["task"] for r in rows)
    assert {"merged", "ensemble", "calibrated", "regression", "private"} <= {r["proxy"] for r in rows}

    record = json.loads((out / "gpu-study.json").read_text())
    assert record["exit_code"] == 0 and record["size"] == "tiny"
    assert {"study.yaml", "log.txt", "FIDELITY.md", "FIDELITY-gpu-study.json"} <= set(record["files"])
