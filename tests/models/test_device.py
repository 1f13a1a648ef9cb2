"""The `device` key (ablate/models/device.py): resolution, sweep worker GPUs, merging on a device, rows.

No GPU is needed: GPU counts are faked where a test is about the rule, and the device code
paths (chunked streaming, in-place averaging) run on the CPU, where they must give the
same bits as the CPU paths.
"""

from __future__ import annotations

import queue
import threading

import pytest
import torch

from ablate.core.config import load_config
from ablate.core.errors import UsageError
from ablate.models import device as dev
from ablate.models.model import load_state, model_from_config, seed_config
from ablate.scoring.inplace import merge_into
from ablate.scoring.merge import RunningSum, f32_block, gray_code_order, map_f32, merge_members, merge_on
from ablate.scoring.sweep_dask import assign_devices
from ablate.store.index import Index
from ablate.store.results import existing_rows, write_rows
from ablate.study.context import load_study
from ablate.workflows.steps import score_mixture

from conftest import run_cli, write_config


def _members(pool, units):
    by_unit = {m["units"][0]: m["model_id"] for m in pool.iter_metas("unit")}
    return [by_unit[u] for u in units]


@pytest.mark.parametrize("spec", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_specs_accepted(spec):
    assert load_config(None, [f"device={spec}"]).device == spec


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:-1", "CUDA", "cuda0", "mps", "'cuda:'"])
def test_bad_device_specs_refused(spec):
    with pytest.raises(UsageError, match="auto, cpu, cuda or cuda:N"):
        load_config(None, [f"device={spec}"])


def test_auto_is_cpu_and_cuda_is_refused_without_a_gpu(monkeypatch):
    monkeypatch.setattr(dev, "gpu_count", lambda: 0)
    assert dev.resolve_device("auto") == torch.device("cpu")
    assert dev.resolve_device(load_config(None, ["device=cpu"])) == torch.device("cpu")
    for spec in ("cuda", "cuda:1"):
        with pytest.raises(UsageError, match=f"device={spec}: no CUDA GPU is visible"):
            dev.resolve_device(spec)
    assert dev.eval_precision(torch.device("cpu"), "bf16") == "fp32"  # the CPU always evaluates in fp32
    assert dev.eval_precision(torch.device("cuda:0"), "fp32") == "fp32"
    assert dev.eval_precision(torch.device("cuda:0"), None) == "bf16"


def test_cli_refuses_cuda_without_a_gpu_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(dev, "gpu_count", lambda: 0)
    code, _, err = run_cli(["score-mixture", "fortunes-00", "literature-00", "--set", "device=cuda",
                            "--set", f"pool={tmp_path / 'pool'}"], capsys)
    assert code == 2 and err.count("\n") == 1 and "device=cuda" in err, err


def test_worker_devices_one_gpu_each():
    assert dev.worker_devices(4, 2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert dev.worker_devices(3, 4, "cuda") == ["cuda:0", "cuda:1", "cuda:2"]
    assert dev.worker_devices(3, 0) == ["cpu"] * 3
    assert dev.worker_devices(2, 8, "cpu") == ["cpu", "cpu"]
    assert dev.worker_devices(3, 2, "cuda:1") == ["cuda:1"] * 3  # pinned: every worker on that GPU
    with pytest.raises(UsageError, match="only 2 GPU"):
        dev.worker_devices(1, 2, "cuda:2")
    with pytest.raises(UsageError, match="no CUDA GPU"):
        dev.worker_devices(2, 0, "cuda")


def test_dask_workers_get_one_gpu_each_per_host():
    gpus = {"tcp://10.0.0.1:4001": 2, "tcp://10.0.0.1:4000": 2, "tcp://10.0.0.1:4002": 2, "tcp://10.0.0.2:5000": 0}
    assert assign_devices(gpus, "auto") == {"tcp://10.0.0.1:4000": "cuda:0", "tcp://10.0.0.1:4001": "cuda:1",
                                            "tcp://10.0.0.1:4002": "cuda:0", "tcp://10.0.0.2:5000": "cpu"}


def test_leased_slots_are_never_shared():
    slots, held, clash = queue.Queue(), set(), []
    for d in dev.worker_devices(3, 3):
        slots.put(d)
    lock = threading.Lock()

    def task(device=None):
        with lock:
            clash.append(device in held)
            held.add(device)
        threading.Event().wait(0.01)
        with lock:
            held.discard(device)
        return device

    threads = [threading.Thread(target=dev.leased, args=(slots, task)) for _ in range(9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not any(clash) and slots.qsize() == 3


def test_streamed_merges_give_the_bits_of_merge_members(study, monkeypatch):
    """merge_into (the model's parameters as the accumulator) and merge_on (a device's sums), run on
    the CPU with chunks that split tensors at odd places, equal merge_members + load_state exactly."""
    _, pool, units, _ = study
    members = _members(pool, units[:3])
    monkeypatch.setattr(dev, "CHUNK", 997)
    paths = [pool.weights_path(m) for m in members]
    config = seed_config(pool, next(pool.iter_metas("seed"))["model_id"])
    for weights in ([1 / 3] * 3, [0.5, 0.3, 0.2]):
        ref, ours = merge_members(pool, members, weights), merge_on(torch.device("cpu"), paths, weights)
        assert ref.keys() == ours.keys() and all(torch.equal(ref[k], ours[k]) for k in ref)
        a, b = model_from_config(config), model_from_config(config)
        load_state(a, ref, "test")
        merge_into(b, pool, members, weights)
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_streamed_running_sum_and_in_place_average_keep_the_bits(study, monkeypatch):
    """The sweep's sum read in chunks equals the whole-file adds it replaced, at every Gray-code step,
    and load_into gives the model average() + load_state gave."""
    _, pool, units, _ = study
    members = _members(pool, units)
    monkeypatch.setattr(dev, "CHUNK", 1000)
    running = RunningSum(pool, members)
    ref, inside = None, set()
    for mask in gray_code_order(len(members)):
        target = {members[i] for i in range(len(members)) if mask >> i & 1}
        running.move_to(target)
        for m, sign in [(m, -1.0) for m in sorted(inside - target)] + [(m, 1.0) for m in sorted(target - inside)]:
            start, nbytes, _ = f32_block(pool.weights_path(m))
            ref = torch.zeros(nbytes // 4) if ref is None else ref
            ref.add_(map_f32(pool.weights_path(m), start, nbytes), alpha=sign)  # the previous step
        inside = target
        assert torch.equal(running.flat, ref)
    config = seed_config(pool, next(pool.iter_metas("seed"))["model_id"])
    a, b = model_from_config(config), model_from_config(config)
    load_state(a, running.average(), "test")
    running.load_into(b, "test")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_rows_record_device_and_precision_and_cpu_is_bit_identical(study_copy, capsys):
    cfg, pool, units, _ = study_copy
    mix = ["fortunes-00", "literature-00"]
    rows = [r for r in score_mixture(cfg, pool, mix) if r["method"] == "merged"]
    # today's path, by hand: merge on the host, load, evaluate in fp32
    study = load_study(cfg, pool)
    model = model_from_config(seed_config(pool, study.seed["model_id"]))
    load_state(model, merge_members(pool, _members(pool, mix)), "test")
    from ablate.scoring.evaluate import evaluate_tokens

    for r in rows:
        ref = evaluate_tokens(model, study.eval_tokens[r["eval_set"]], study.byte_len, seq_len=cfg.eval.seq_len,
                              batch_size=cfg.eval.batch_size)
        assert r["ppl"] == ref["ppl"]
    cfg_path = write_config(cfg, pool.root.parent / "c.yaml")
    code, _, err = run_cli(["score-mixture", *mix, "--force", "--set", "device=cpu", "-c", str(cfg_path)], capsys)
    assert code == 0, err
    cols, got = Index(pool).query("SELECT eval_set, ppl, nll_sum, device, eval_precision FROM mixture_perplexity "
                                  "WHERE method = 'merged' AND k = 2")
    assert {(e, p) for e, p, *_ in got} == {(r["eval_set"], r["ppl"]) for r in rows}  # the same bits
    assert {(d, p) for *_, d, p in got} == {("cpu", "fp32")}


def test_cached_rows_count_only_in_their_precision(study_copy):
    cfg, pool, units, _ = study_copy
    score_mixture(cfg, pool, ["fortunes-00"])
    _, rows = Index(pool).query("SELECT * FROM mixture_perplexity WHERE method = 'merged'")
    cols = Index(pool).query("SELECT * FROM mixture_perplexity LIMIT 0")[0]
    row = dict(zip(cols, rows[0]))
    bf16 = dict(row, row_id="fake-bf16", eval_precision="bf16", created_at=str(row["created_at"]))
    old = {k: v for k, v in dict(row, row_id="fake-old", created_at=str(row["created_at"])).items()
           if k != "eval_precision"}  # a row from before the column
    write_rows(pool, [bf16, old])
    assert "fake-bf16" in existing_rows(pool, "bf16") and "fake-bf16" not in existing_rows(pool, "fp32")
    assert "fake-old" in existing_rows(pool, "fp32") and row["row_id"] in existing_rows(pool, "fp32")
    pool.index_path.unlink()  # rebuilt from the results files: the old row's precision is NULL
    assert Index(pool).query("SELECT eval_precision FROM mixture_perplexity WHERE row_id = 'fake-old'")[1] == [(None,)]
