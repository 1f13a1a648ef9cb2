"""Score every mixture of a set of units, one add/remove per step.

How to run:
    ablate sweep                          # all non-empty subsets of the study's units
    ablate sweep --max-size 2 --jobs 2    # pairs and singles, two processes
    ablate sweep --backend dask-local --workers 2   # on Dask (ablate/scoring/sweep_dask.py)
    ablate sweep --sample 200 --sizes 2-4 --seed 1  # more than 20 units: a seeded sample
    ablate sweep --mixtures mixtures.txt            # listed mixtures, weights and macro groups allowed

Mixtures are walked in Gray-code order, so each step changes one member of a
running float32 sum: O(parameters) per mixture instead of O(k · parameters). The
order is cut into contiguous segments, each scored by one worker with its own running
sum (ablate/scoring/sweep_segment.py); workers return rows and this process alone writes them,
segment by segment, so an interrupted sweep keeps what it finished and a rerun scores
only what is missing. Where the workers run is a backend, one entry of BACKENDS: `local`
(joblib processes, here), `dask` and `dask-local` (ablate/scoring/sweep_dask.py). Which mixtures
(size ranges, samples, files) is ablate/scoring/mixtures.py; a file's weighted and macro mixtures
are merged one by one as `score-mixture` does.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from joblib import Parallel, delayed

from ablate.core.config import StudyConfig
from ablate.core.errors import UsageError
from ablate.core.progress import bar
from ablate.data.units import unit_ids as pool_units
from ablate.models.device import gpu_count, leased, worker_devices
from ablate.models.threads import paused
from ablate.scoring.merge import RunningSum, check_compatible, merge_id
from ablate.scoring.mixtures import gray_rank, plan_masks, read_mixtures, score_entries
from ablate.scoring.score import score_reference_models
from ablate.scoring.screen import screen_candidates
from ablate.scoring.sweep_dask import dask_results
from ablate.scoring.sweep_segment import score_segment, segments
from ablate.store.pool import Pool
from ablate.store.results import existing_rows, row_id, write_rows
from ablate.study.context import load_study, normalize_units


def local_results(cfg: StudyConfig, pool: Pool, unit_ids: list[str], masks: list[int],
                  eval_names: list[str] | None, jobs: int, threads: int) -> Iterator[list[dict]]:
    """Each segment's rows from `jobs` joblib processes, as they finish. With several GPUs, worker i's
    device is cuda:(i % GPUs) (device.worker_devices): a task leases a free one for its run."""
    # Several segments per worker: finer progress and finer-grained resume.
    segs = segments(masks, max(1, jobs * 4)) if masks else []
    devices = worker_devices(jobs, gpu_count(), cfg.device)
    args = (cfg.model_dump(mode="json"), str(pool.root), unit_ids)
    run = Parallel(n_jobs=jobs, return_as="generator_unordered")
    if len(set(devices)) == 1:  # the CPU, or one GPU for all
        yield from run(delayed(score_segment)(*args, seg, eval_names, threads, device=devices[0]) for seg in segs)
        return
    import multiprocessing

    with multiprocessing.Manager() as manager:
        slots = manager.Queue()
        for d in devices:
            slots.put(d)
        yield from run(delayed(leased)(slots, score_segment, *args, seg, eval_names, threads) for seg in segs)


@dataclass(frozen=True)
class Backend:
    """Where a sweep's segments run: `results(cfg, pool, unit_ids, masks, eval_names, **options)` yields
    each finished segment's rows (any order) and run_sweep writes them. `options` names which of
    run_sweep's settings it takes: jobs, threads (local), scheduler, workers, log (Dask)."""

    results: Callable[..., Iterator[list[dict]]]
    options: tuple[str, ...]

    def run(self, cfg: StudyConfig, pool: Pool, unit_ids: list[str], masks: list[int],
            eval_names: list[str] | None, **settings) -> Iterator[list[dict]]:
        return self.results(cfg, pool, unit_ids, masks, eval_names, **{k: settings[k] for k in self.options})


# The sweep backends, by --backend name (mergekit's merge_methods/registry.py).
BACKENDS: dict[str, Backend] = {
    "local": Backend(local_results, ("jobs", "threads")),  # joblib processes on this machine
    "dask": Backend(dask_results, ("scheduler", "log")),  # a running Dask scheduler's workers
    "dask-local": Backend(dask_results, ("workers", "log")),  # a LocalCluster started here
}


def get(name: str, scheduler: str | None = None, workers: int | None = None) -> Backend:
    """The backend called `name`, once --scheduler and --workers are checked against it."""
    if name not in BACKENDS:
        *others, last = BACKENDS
        raise UsageError(f"unknown sweep backend {name!r}: use {', '.join(others)} or {last}")
    backend = BACKENDS[name]
    if ("scheduler" in backend.options) != bool(scheduler):
        raise UsageError("--scheduler tcp://HOST:PORT goes with --backend dask (and only with it)")
    if workers is not None and ("workers" not in backend.options or workers < 1):
        raise UsageError("--workers N (N >= 1) goes with --backend dask-local")
    return backend


def choose(pool: Pool, unit_ids: list[str] | None, *, max_size: int | None = None, sizes: str | None = None,
           sample: int | None = None, seed: int | None = None, mixtures_file=None):
    """(units, masks over them in Gray-code order, weighted/macro file entries); every check, nothing written."""
    known = pool_units(pool, required=not unit_ids)
    if mixtures_file is None:
        unit_ids = normalize_units(unit_ids) if unit_ids else known
        return unit_ids, plan_masks(len(unit_ids), max_size=max_size, sizes=sizes, sample=sample, seed=seed), []
    if unit_ids or max_size is not None or sizes is not None or sample is not None or seed is not None:
        raise UsageError("--mixtures FILE lists its own mixtures: drop --units, --max-size, --sizes, --sample, --seed")
    entries = read_mixtures(mixtures_file, known)
    unit_ids = sorted({u for e in entries if e.plain for u in e.units})  # only what the running sum reads
    masks = sorted((sum(1 << unit_ids.index(u) for u in e.units) for e in entries if e.plain), key=gray_rank)
    return unit_ids, masks, [e for e in entries if not e.plain]


def run_sweep(cfg: StudyConfig, pool: Pool, unit_ids: list[str] | None = None, *, max_size: int | None = None,
              sizes: str | None = None, sample: int | None = None, seed: int | None = None, mixtures_file=None,
              jobs: int | None = None, eval_names: list[str] | None = None, force: bool = False,
              backend: str = "local", scheduler: str | None = None, workers: int | None = None,
              screen: bool = False, log=print) -> dict:
    """Score all mixtures; returns counts (scored, cached) and seconds.

    Which mixtures: all of `unit_ids` (default: the pool's), of sizes `max_size` or `sizes`
    ("A-B"), a seeded `sample` of them, or the `mixtures_file`'s (ablate/scoring/mixtures.py).
    backend: "local" (joblib processes, `jobs`), "dask" (a running scheduler at `scheduler`)
    or "dask-local" (a LocalCluster of `workers` processes): an entry of BACKENDS.
    `screen`: race the mixtures still to score on growing prefixes (ablate/scoring/screen.py), in this process.
    """
    runner = get(backend, scheduler, workers)
    unit_ids, masks, entries = choose(pool, unit_ids, max_size=max_size, sizes=sizes, sample=sample, seed=seed,
                                      mixtures_file=mixtures_file)
    study = load_study(cfg, pool, eval_names)
    members = [study.unit_member(u) for u in unit_ids]  # fail early on an untrained unit
    for u in sorted({u for e in entries for u in e.units}):
        study.unit_member(u)  # (the file's weighted mixtures too)
    done = set() if force else existing_rows(pool, study.precision)

    def is_done(mask: int) -> bool:
        chosen = [members[i] for i in range(len(unit_ids)) if mask >> i & 1]
        mid = merge_id(chosen, [1.0 / len(chosen)] * len(chosen))
        return all(row_id("merged", mid, ev, cfg.eval.seq_len) in done for ev in study.evals)

    todo = [m for m in masks if not is_done(m)]
    jobs = jobs or cfg.sweep_jobs
    t0 = time.perf_counter()
    scored, screened = 0, None
    if screen and todo:
        if backend != "local":
            raise UsageError("--screen runs in this process: drop --backend")
        screened = screen_masks(study, unit_ids, members, todo)
        scored, todo = len(todo), []
    threads = cfg.train.threads or max(1, (os.cpu_count() or 1) // jobs)  # share the cores, never fight
    total = len(masks) + len(entries)
    # the rate reads "12.3 mixtures/min" (it was "mix_min=12.3", which no reader could decode)
    with bar("sweep", total, len(masks) - len(todo), {"rate": "-"}, {"rate": "{} mixtures/min"}) as update, \
            paused():  # workers compute
        results = runner.run(cfg, pool, unit_ids, todo, eval_names, jobs=jobs, threads=threads,
                             scheduler=scheduler, workers=workers, log=log)
        for rows in results:  # rows come back here to be written, whichever backend scored them
            write_rows(pool, rows)
            n = len({tuple(r["mixture"]) for r in rows})
            scored += n
            update(n, rate=f"{scored / max(1e-9, time.perf_counter() - t0) * 60:.1f}")
        n_entries = score_entries(study, entries, done, on_rows=update)  # weighted/macro: one merge each
    scored += n_entries
    mixtures = [[unit_ids[i] for i in range(len(unit_ids)) if m >> i & 1] for m in masks]
    mixtures += [list(e.units) for e in entries]
    ref_rows = score_reference_models(study, mixtures, set() if force else existing_rows(pool, study.precision))
    write_rows(pool, ref_rows)
    out = {"mixtures": total, "scored": scored, "cached": total - scored, "units": unit_ids,
           "reference_rows": len(ref_rows), "seconds": time.perf_counter() - t0}
    if screened:
        out.update(screened={k: v for k, v in screened.items() if not k.endswith("_rows")},
                   dropped=len(screened["screened_rows"]))
    return out


def screen_masks(study, unit_ids: list[str], members: list[str], masks: list[int]) -> dict:
    """The screened sweep (ablate/scoring/screen.py): masks in Gray-code order, each slot loaded from one running sum."""
    check_compatible(study.pool, members, study.cfg.verify_hash)
    running = RunningSum(study.pool, members, study.device)
    cands = []
    for mask in masks:
        chosen = [i for i in range(len(unit_ids)) if mask >> i & 1]
        weights = [1.0 / len(chosen)] * len(chosen)
        cands.append({"mixture": [unit_ids[i] for i in chosen], "weights": weights,
                      "members": {members[i] for i in chosen},
                      "model_id": merge_id([members[i] for i in chosen], weights)})

    def load(stack, slot, cand):
        running.move_to(cand["members"])
        stack.load(slot, running)

    return screen_candidates(study, cands, load)
