"""Score every mixture of a set of units, one add/remove per step.

How to run:
    ablate sweep                          # all non-empty subsets of the study's units
    ablate sweep --max-size 2 --jobs 2    # pairs and singles, two processes
    ablate sweep --backend dask-local --workers 2   # on Dask (ablate/distributed.py)

Mixtures are walked in Gray-code order, so each step changes one member of a
running float32 sum: O(parameters) per mixture instead of O(k · parameters). The
order is cut into contiguous segments, each scored by one joblib worker with its
own running sum; workers return rows and this process alone writes them, segment
by segment, so an interrupted sweep keeps what it finished and a rerun scores only
what is missing.
"""

from __future__ import annotations

import os
import time

from joblib import Parallel, delayed

from ablate import faults
from ablate.config import StudyConfig
from ablate.errors import UsageError
from ablate.merge import RunningSum, check_compatible, gray_code_order, merge_id
from ablate.pool import Pool
from ablate.progress import bar
from ablate.score import (attach_cost, existing_rows, load_study, row_id, score_reference_models,
                          evaluate_rows, write_rows)
from ablate.train import normalize_units


def plan(n_units: int, max_size: int | None) -> list[int]:
    """Gray-code order restricted to mixtures of at most max_size units."""
    limit = max_size or n_units
    return [m for m in gray_code_order(n_units) if bin(m).count("1") <= limit]


def segments(masks: list[int], n: int) -> list[list[int]]:
    size = max(1, -(-len(masks) // n))
    return [masks[i:i + size] for i in range(0, len(masks), size)]


def score_segment(cfg_dict: dict, pool_root: str, unit_ids: list[str], masks: list[int],
                  eval_names: list[str] | None, threads: int) -> list[dict]:
    """Worker: one running sum walks its segment; returns rows (never writes the index)."""
    import torch

    from ablate.energy import Meter
    from ablate.model import load_state, model_from_config, seed_config

    torch.set_num_threads(threads)
    cfg = StudyConfig.model_validate(cfg_dict)
    pool = Pool(pool_root)
    study = load_study(cfg, pool, eval_names)
    members = [study.unit_member(u) for u in unit_ids]
    check_compatible(pool, members, cfg.verify_hash)  # the running sum reads raw tensors
    model = model_from_config(seed_config(pool, study.seed["model_id"]))
    running = RunningSum(pool, members)
    rows = []
    with Meter(cfg.energy) as meter:
        for mask in masks:
            chosen = [i for i in range(len(unit_ids)) if mask >> i & 1]
            mix_members = [members[i] for i in chosen]
            t0 = time.perf_counter()
            running.move_to(set(mix_members))
            load_state(model, running.average(), "running average")
            merge_s = time.perf_counter() - t0
            weights = [1.0 / len(chosen)] * len(chosen)
            rows += evaluate_rows(study, model, method="merged", mixture=[unit_ids[i] for i in chosen],
                                  weights=weights, model_id=merge_id(mix_members, weights), merge_s=merge_s)
            faults.point("sweep.mixture")
    attach_cost(rows, meter.result)
    return rows


def run_sweep(cfg: StudyConfig, pool: Pool, unit_ids: list[str] | None = None, *, max_size: int | None = None,
              jobs: int | None = None, eval_names: list[str] | None = None, force: bool = False,
              backend: str = "local", scheduler: str | None = None, workers: int | None = None,
              log=print) -> dict:
    """Score all mixtures; returns counts (scored, cached) and seconds.

    backend: "local" (joblib processes, `jobs`), "dask" (a running scheduler at `scheduler`)
    or "dask-local" (a LocalCluster of `workers` processes); see ablate/distributed.py.
    """
    if backend not in ("local", "dask", "dask-local"):
        raise UsageError(f"unknown sweep backend {backend!r}: use local, dask or dask-local")
    if (backend == "dask") != bool(scheduler):
        raise UsageError("--scheduler tcp://HOST:PORT goes with --backend dask (and only with it)")
    if workers is not None and (backend != "dask-local" or workers < 1):
        raise UsageError("--workers N (N >= 1) goes with --backend dask-local")
    if unit_ids:
        unit_ids = normalize_units(unit_ids)
    else:
        unit_ids = sorted(p.stem for p in pool.units_dir.glob("*.json") if not p.stem.startswith("seedmix-"))
        if not unit_ids:
            raise UsageError(f"no units in {pool.root}: run `ablate units split` first")
    if max_size is not None and max_size < 1:
        raise UsageError("--max-size must be at least 1")
    if len(unit_ids) > 20:
        raise UsageError(f"{len(unit_ids)} units make {2**len(unit_ids) - 1} mixtures; pass --max-size or --units")
    study = load_study(cfg, pool, eval_names)
    members = [study.unit_member(u) for u in unit_ids]  # fail early on an untrained unit
    done = set() if force else existing_rows(pool)

    def is_done(mask: int) -> bool:
        chosen = [members[i] for i in range(len(unit_ids)) if mask >> i & 1]
        mid = merge_id(chosen, [1.0 / len(chosen)] * len(chosen))
        return all(row_id("merged", mid, ev, cfg.eval.seq_len) in done for ev in study.evals)

    masks = plan(len(unit_ids), max_size)
    todo = [m for m in masks if not is_done(m)]
    jobs = jobs or cfg.sweep_jobs
    t0 = time.perf_counter()
    # Several segments per worker: finer progress and finer-grained resume.
    segs = segments(todo, max(1, jobs * 4)) if todo else []
    threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // jobs)  # share the cores, never fight
    scored = 0
    with bar("sweep", len(masks), len(masks) - len(todo), {"mix_min": "-"}) as update:
        if backend == "local":
            work = (delayed(score_segment)(cfg.model_dump(mode="json"), str(pool.root), unit_ids, seg, eval_names,
                                           threads) for seg in segs)
            results = Parallel(n_jobs=jobs, return_as="generator_unordered")(work)
        else:  # the same segments on Dask workers; rows still come back here to be written
            from ablate.distributed import dask_results

            results = dask_results(cfg, pool, unit_ids, todo, eval_names, scheduler=scheduler, workers=workers,
                                   log=log)
        for rows in results:
            write_rows(pool, rows)
            n = len({tuple(r["mixture"]) for r in rows})
            scored += n
            update(n, mix_min=f"{scored / max(1e-9, time.perf_counter() - t0) * 60:.1f}")
    mixtures = [[unit_ids[i] for i in range(len(unit_ids)) if m >> i & 1] for m in masks]
    ref_rows = score_reference_models(study, mixtures, set() if force else existing_rows(pool))
    write_rows(pool, ref_rows)
    from ablate.calibrate import refresh

    refresh(pool, cfg.eval.seq_len, log=lambda *a: None)  # `calibrated` rows beside `merged` ones
    return {"mixtures": len(masks), "scored": scored, "cached": len(masks) - len(todo),
            "reference_rows": len(ref_rows), "seconds": time.perf_counter() - t0}
