"""One segment of a sweep: a running sum walks a run of Gray-code masks and returns their rows.

How to run: not directly; every sweep backend (ablate/scoring/sweep.py: `local`; ablate/scoring/sweep_dask.py:
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

from ablate.core import faults
from ablate.core.config import StudyConfig
from ablate.core.energy import Meter
from ablate.models.threads import claim as claim_threads
from ablate.models.threads import release as release_threads
from ablate.scoring.batched import ModelStack, study_stack, window_stats
from ablate.scoring.merge import RunningSum, check_compatible, merge_id
from ablate.scoring.score import study_row
from ablate.store.pool import Pool
from ablate.store.results import attach_cost
from ablate.study.context import load_study


def segments(masks: list[int], n: int) -> list[list[int]]:
    """`masks` cut into at most n contiguous runs (contiguous in Gray-code order: one add/remove per step)."""
    size = max(1, -(-len(masks) // n))
    return [masks[i:i + size] for i in range(0, len(masks), size)]


def score_segment(cfg_dict: dict, pool_root: str, unit_ids: list[str], masks: list[int],
                  eval_names: list[str] | None, threads: int, device: str | None = None) -> list[dict]:
    """Worker: one running sum walks its segment on `device` (default cfg's); returns rows (never writes the index).
    Consecutive mixtures are evaluated `slots` at a time in one pass (ablate/scoring/batched.py)."""
    claim_threads(threads)  # this worker's share of the cores (ablate/models/threads.py), refreshed per pass
    try:
        return _score_segment(cfg_dict, pool_root, unit_ids, masks, eval_names, device)
    finally:
        release_threads()  # an idle pool worker is not a job: the others take its cores


def _score_segment(cfg_dict: dict, pool_root: str, unit_ids: list[str], masks: list[int],
                   eval_names: list[str] | None, device: str | None) -> list[dict]:
    cfg = StudyConfig.model_validate(cfg_dict)
    pool = Pool(pool_root)
    study = load_study(cfg, pool, eval_names, device)
    if study.device.type == "cuda":
        torch.cuda.set_device(study.device)  # autocast and kernels of this worker: its own GPU
    members = [study.unit_member(u) for u in unit_ids]
    check_compatible(pool, members, cfg.verify_hash)  # the running sum reads raw tensors
    running = RunningSum(pool, members, study.device)
    stack, windows, n_nonembed = study_stack(study)  # windows cut once per worker, not per mixture
    rows = []
    with Meter(cfg.energy) as meter:
        for at in range(0, len(masks), stack.slots):  # consecutive Gray-code mixtures share one pass
            group = [[i for i in range(len(unit_ids)) if mask >> i & 1] for mask in masks[at:at + stack.slots]]
            merge_s = [_load_slot(stack, slot, running, {members[i] for i in chosen})
                       for slot, chosen in enumerate(group)]
            for n_ev, ev in enumerate(study.evals):
                t0 = time.perf_counter()
                nll = stack.window_nll(windows[ev["domain"]], cfg.eval.batch_size, len(group),
                                       precision=study.precision)
                eval_s = (time.perf_counter() - t0) / len(group)  # the pass's seconds, shared evenly
                for slot, chosen in enumerate(group):
                    weights = [1.0 / len(chosen)] * len(chosen)
                    rows.append(study_row(study, ev, window_stats(windows[ev["domain"]], nll[slot], eval_s),
                                          method="merged", mixture=[unit_ids[i] for i in chosen], weights=weights,
                                          model_id=merge_id([members[i] for i in chosen], weights),
                                          n_nonembed=n_nonembed, device=study.device,
                                          merge_s=merge_s[slot] if n_ev == 0 else 0.0))
            for _ in group:
                faults.point("sweep.mixture")
    attach_cost(rows, meter.result)
    return rows


def _load_slot(stack: ModelStack, slot: int, running: RunningSum, members: set[str]) -> float:
    """Move the running sum to `members` and put its mean in `slot`; returns the seconds (the row's merge_s)."""
    t0 = time.perf_counter()
    running.move_to(members)
    stack.load(slot, running)
    return time.perf_counter() - t0
