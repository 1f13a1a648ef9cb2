"""The sweep's Dask backends (`dask`, `dask-local`): Gray-code segments -> futures -> rows back to the driver.

How to run:
    ablate sweep --backend dask-local --workers 2            # a LocalCluster on this machine
    dask scheduler --port 8786 &                               # or a real cluster: every worker
    dask worker tcp://HOST:8786 --nthreads 1 &                 #   runs the same ablate install and
    ablate sweep --backend dask --scheduler tcp://HOST:8786    #   sees the pool at the same path

The driver cuts the mixtures still to score into contiguous segments of the
Gray-code order; each segment is one task that keeps its own running sum
(`sweep_segment.score_segment`) and reads members from the shared pool path. Tasks return
rows; only the driver writes them (results file, then index), segment by segment,
so an interrupted sweep keeps what finished and a rerun scores only what is missing.
ablate/scoring/sweep.py's BACKENDS table names `dask_results` for both backends.
On each host the workers, in address order, take one GPU each (`assign_devices`; cfg.device).

Worker loss: the scheduler re-runs a lost worker's tasks elsewhere (a nanny also
restarts the worker); a task that keeps killing workers comes back as
`KilledWorker`, and the driver resubmits it up to `retries` times. Rows are keyed by
`row_id` and the driver forwards each id once, so no row is ever recorded twice.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Iterator

from ablate.core.config import StudyConfig
from ablate.core.errors import AblateError, UsageError
from ablate.models.device import gpu_count, worker_devices
from ablate.models.threads import machine_cores  # what a process may use (affinity), not the whole host
from ablate.scoring.sweep_segment import score_segment, segments
from ablate.store.pool import Pool


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0]


def _score(cfg_dict: dict, pool_root: str, unit_ids: list[str], masks: list[int], eval_names: list[str] | None,
           threads_by_host: dict[str, int], devices: dict[str, str] | None = None) -> list[dict]:
    """Runs on a worker: the local backend's segment scorer with a thread count fitted to this host,
    on the worker's own device (a worker that joined later resolves cfg.device itself)."""
    from distributed import get_worker

    worker = get_worker()
    # Several workers (and worker threads) on one host share its cores: divide them.
    threads = threads_by_host.get(_host(worker.address)) or max(1, machine_cores() // max(1, worker.state.nthreads))
    return score_segment(cfg_dict, pool_root, unit_ids, masks, eval_names, threads,
                         device=(devices or {}).get(worker.address))


def assign_devices(gpus_by_worker: dict[str, int], spec: str) -> dict[str, str]:
    """{worker address: device}: on each host its workers, in address order, get cuda:(i % that host's
    GPUs) (device.worker_devices), so several workers on a GPU host own one GPU each."""
    hosts: dict[str, list[str]] = defaultdict(list)
    for addr in sorted(gpus_by_worker):
        hosts[_host(addr)].append(addr)
    out = {}
    for addrs in hosts.values():
        out |= dict(zip(addrs, worker_devices(len(addrs), gpus_by_worker[addrs[0]], spec)))
    return out


def _sees_pool(pool_root: str) -> bool:
    return (Path(pool_root) / "study.json").is_file()


def connect(scheduler: str | None, workers: int | None):
    """(client, cluster or None): a running scheduler, or a LocalCluster of `workers` processes."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError("the dask backends need dask.distributed: pip install 'ablate[dask]'") from None
    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise AblateError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        client.wait_for_workers(1, timeout=120)
        return client, None
    n = workers or machine_cores()
    # One thread per worker process: torch parallelism inside a task is set per host
    # below, and processes (not threads) keep the GIL out of the merge loop.
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    client.wait_for_workers(n, timeout=120)
    return client, cluster


def _workers(client) -> dict[str, dict]:
    """Every worker's info (recent clients list only the first 5 unless asked for all)."""
    import inspect

    if "n_workers" in inspect.signature(client.scheduler_info).parameters:
        return client.scheduler_info(n_workers=-1)["workers"]
    return client.scheduler_info()["workers"]


def _threads_by_host(client, info: dict[str, dict]) -> dict[str, int]:
    cpus = client.run(machine_cores)
    slots, host_cpus = defaultdict(int), {}
    for addr, w in info.items():
        slots[_host(addr)] += w.get("nthreads", 1)
        host_cpus[_host(addr)] = cpus.get(addr, 1)
    return {h: max(1, host_cpus[h] // slots[h]) for h in slots}


def _plan(client, cfg: StudyConfig, pool: Pool, masks: list[int]) -> tuple[str, list[list[int]], dict, dict]:
    """(the pool's path as workers see it, segments, threads per host, device per worker) for this cluster."""
    pool_root = str(Path(pool.root).resolve())  # workers may have another working directory
    blind = [addr for addr, ok in client.run(_sees_pool, pool_root).items() if not ok]
    if blind:
        raise UsageError(f"Dask workers {', '.join(blind[:3])} cannot see the pool at {pool_root}: "
                         f"the sweep needs a pool path shared by the driver and every worker")
    info = _workers(client)
    threads = _threads_by_host(client, info)
    n_slots = sum(w.get("nthreads", 1) for w in info.values())
    # Several segments per worker slot: finer load balance, and a lost worker loses less work.
    segs = segments(masks, max(1, n_slots * 4))
    return pool_root, segs, threads, assign_devices(client.run(gpu_count), cfg.device)


def dask_results(cfg: StudyConfig, pool: Pool, unit_ids: list[str], masks: list[int],
                 eval_names: list[str] | None, *, scheduler: str | None = None, workers: int | None = None,
                 retries: int = 3, client=None, log=print) -> Iterator[list[dict]]:
    """Yield each finished segment's new rows (any order); the caller writes them.

    `client` reuses an open dask Client (tests, notebooks); otherwise one is opened
    from `scheduler` or a LocalCluster of `workers` processes, and closed at the end.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    if not masks:
        return
    own = client is None
    cluster = None
    if own:
        client, cluster = connect(scheduler, workers)
    try:
        pool_root, segs, threads, devices = _plan(client, cfg, pool, masks)
        cfg_dict = cfg.model_dump(mode="json")
        run = uuid.uuid4().hex[:8]
        tries = [0] * len(segs)

        def submit(i: int):
            return client.submit(_score, cfg_dict, pool_root, unit_ids, segs[i], eval_names, threads, devices,
                                 key=f"ablate-segment-{run}-{i}-{tries[i]}", pure=False)

        pending = {submit(i): i for i in range(len(segs))}
        seen: set[str] = set()
        queue = as_completed(list(pending))
        for fut in queue:
            i = pending.pop(fut)
            try:
                rows = fut.result()
            except KilledWorker as exc:
                tries[i] += 1
                if tries[i] > retries:
                    raise AblateError(f"sweep segment {i} ({len(segs[i])} mixtures) killed its worker "
                                      f"{tries[i]} times ({exc}); out of memory?") from None
                log(f"segment {i} lost with its worker; resubmitting ({tries[i]}/{retries})")
                retry = submit(i)
                pending[retry] = i
                queue.add(retry)
                continue
            finally:
                fut.release()
            fresh = [r for r in rows if r["row_id"] not in seen]  # a retried segment must not count twice
            seen.update(r["row_id"] for r in fresh)
            yield fresh
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
