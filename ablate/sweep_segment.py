"""One segment of a sweep: a running sum walks a run of Gray-code masks and returns their rows.

How to run: not directly; every sweep backend (ablate/sweep.py: `local`; ablate/sweep_dask.py:
`dask`, `dask-local`) cuts the mixtures still to score with `segments` and runs
`score_segment` once per segment, in a worker process:
    ablate sweep --jobs 2                          # two joblib workers
    ablate sweep --backend dask-local --workers 2  # two Dask workers

A worker never writes the index: it returns rows, and the driver (sweep.run_sweep) alone
writes them, segment by segment.
"""

from __future__ import annotations

import time

import torch

from ablate import faults
from ablate.config import StudyConfig
from ablate.energy import Meter
from ablate.merge import RunningSum, check_compatible, merge_id
from ablate.model import model_from_config, seed_config
from ablate.pool import Pool
from ablate.score import attach_cost, evaluate_rows, load_study


def segments(masks: list[int], n: int) -> list[list[int]]:
    """`masks` cut into at most n contiguous runs (contiguous in Gray-code order: one add/remove per step)."""
    size = max(1, -(-len(masks) // n))
    return [masks[i:i + size] for i in range(0, len(masks), size)]


def score_segment(cfg_dict: dict, pool_root: str, unit_ids: list[str], masks: list[int],
                  eval_names: list[str] | None, threads: int, device: str | None = None) -> list[dict]:
    """Worker: one running sum walks its segment on `device` (default cfg's); returns rows (never writes the index)."""
    torch.set_num_threads(threads)
    cfg = StudyConfig.model_validate(cfg_dict)
    pool = Pool(pool_root)
    study = load_study(cfg, pool, eval_names, device)
    if study.device.type == "cuda":
        torch.cuda.set_device(study.device)  # autocast and kernels of this worker: its own GPU
    members = [study.unit_member(u) for u in unit_ids]
    check_compatible(pool, members, cfg.verify_hash)  # the running sum reads raw tensors
    model = model_from_config(seed_config(pool, study.seed["model_id"]), study.device)
    running = RunningSum(pool, members, study.device)
    rows = []
    with Meter(cfg.energy) as meter:
        for mask in masks:
            chosen = [i for i in range(len(unit_ids)) if mask >> i & 1]
            mix_members = [members[i] for i in chosen]
            t0 = time.perf_counter()
            running.move_to(set(mix_members))
            running.load_into(model, "running average")  # on a GPU in place: the sum and the model, no third copy
            merge_s = time.perf_counter() - t0
            weights = [1.0 / len(chosen)] * len(chosen)
            rows += evaluate_rows(study, model, method="merged", mixture=[unit_ids[i] for i in chosen],
                                  weights=weights, model_id=merge_id(mix_members, weights), merge_s=merge_s)
            faults.point("sweep.mixture")
    attach_cost(rows, meter.result)
    return rows
