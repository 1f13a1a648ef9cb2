"""Smoke test for bench/: every benchmark module imports and runs in --quick mode.

Speed is not checked here (bench/run.py does that, against same-run references); this
only keeps the scripts from rotting. One tiny study (fortunes-min, hidden 32) is built
once and shared; memory runs its children as real subprocesses, as in `make bench`, but forked from a warm
interpreter (tests/warm.py: ABLATE_BENCH_PYTHON), since nothing here is a measurement.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def bench_study(tmp_path_factory):
    import torch

    import warm

    sys.path.insert(0, str(BENCH))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # smaller variance on a shared 2-core machine; speed is not tested here
    common = importlib.import_module("common")
    root = tmp_path_factory.mktemp("bench") / "study"
    common.build_study(root, quick=True, log=lambda *a: None)
    os.environ["ABLATE_BENCH_PYTHON"] = str(warm.python())  # children: warm forks, not fresh interpreters (~50 s)
    yield root
    os.environ.pop("ABLATE_BENCH_PYTHON", None)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["bench_train", "bench_eval", "bench_mixture", "bench_sweep", "bench_memory",
                                  "bench_scaling", "bench_device", "bench_throughput", "bench_screen",
                                  "bench_optimize", "bench_ensemble", "bench_tasks"])
def test_bench_module_runs_quick(bench_study, tmp_path, name):
    module = importlib.import_module(name)
    out = tmp_path / f"{name}.json"
    extra = ["--cache", str(tmp_path / "cache")] if name == "bench_screen" else []
    result = module.main(["--quick", "--study", str(bench_study), "--out", str(out), *extra])
    assert out.exists() and result["benchmark"] == name.removeprefix("bench_")
    if name == "bench_eval":
        assert result["ppl_identical_1e-4"] and result["ours_equals_before_bitwise"]
    if name in ("bench_mixture", "bench_tasks"):
        assert result["same_nll"]
    if name == "bench_memory":
        assert result["flat"]
    if name == "bench_throughput":
        assert result["sweep"]["max_rel_diff_nll"] <= 1e-6 and result["screen"][0]["eval_tokens_screened"] > 0
    if name == "bench_screen":  # one study: nothing is left out, the default is replayed on every eval set
        assert all(0.0 <= r["same_top3"] <= 1.0 and r["saving"] >= 1.0 for r in result["per_eval_set_default"].values())


def test_render_writes_a_table(tmp_path):
    sys.path.insert(0, str(BENCH))
    render = importlib.import_module("render")
    text = render.render_markdown({"started_at": "now", "total_s": 1.0, "quick": True, "benchmarks": {},
                                   "machine": {"cpus": 2, "torch": "x", "torch_threads": 2, "python": "3",
                                               "gpu": "none"}})
    assert "| # | benchmark |" in text and "GPU" in text


def test_the_gpu_script_runs_on_cpu_without_the_pool_dependencies(tmp_path):
    """bench/gpu_135m.py's code path, tiny, on CPU, with DuckDB, datasets and codecarbon made unimportable:
    a bare GPU machine (torch + transformers) runs it unchanged."""
    import json
    import subprocess

    code = ("import sys, runpy\nfor m in ('duckdb', 'datasets', 'codecarbon', 'pydantic'):\n    sys.modules[m] = None\n"
            f"sys.argv = ['gpu_135m.py', '--tiny', '--device', 'cpu', '--out', {str(tmp_path)!r}]\n"
            f"runpy.run_path({str(BENCH / 'gpu_135m.py')!r}, run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_135m.json").read_text())
    assert "does not depend on weight values" in result["model"] and result["device"] == "cpu"
    assert result["eval"]["nll_rel_diff_vs_user"] < 1e-4 and 0 < result["train"]["mfu"] and 0 < result["eval"]["mfu"]
