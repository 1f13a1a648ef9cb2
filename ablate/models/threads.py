"""How many torch threads an ablate process uses: the machine's cores shared among the ablate jobs on it.

How to run (from Python; the CLI and every worker already do this):
    from ablate.models import threads
    threads.claim()            # at the start of a torch job: registers it, sets its share of the cores
                               # (and keeps freed memory for the next batch: ablate/models/allocator.py)
    threads.refresh()          # in a long loop: take a new share when jobs started or ended

The rule, first that applies:
  1. `train.threads` in the config (or the sweep's `threads` argument): exactly that many;
  2. OMP_NUM_THREADS in the environment: torch already obeys it, we leave it alone;
  3. otherwise the cores this process may run on (its CPU affinity, so cgroup/cpuset limits count),
     divided by the ablate jobs running now on this machine, at least 1.
Jobs register as files in a per-user folder (pid + start time, so a dead job whose pid was reused
does not count); evaluation and sweep loops re-read the folder every few seconds (refresh), so when a
second job starts they drop to their share instead of both fighting over every core (measured on 2
cores: two 2-thread jobs run 4-10x slower than two 1-thread jobs). A training run takes its share when
it starts and keeps it: changing threads mid-run could change its floats and its bit-identical resume.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from ablate.models.allocator import reuse_freed_memory
from ablate.store.pool import pid_alive

REFRESH_S = 5.0
_state = {"path": None, "fixed": None, "checked": 0.0, "threads": None}


def registry() -> Path:
    base = os.environ.get("ABLATE_JOBS_DIR") or os.path.join(
        os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir(), f"ablate-jobs-{os.getuid()}")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def machine_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def live_jobs() -> int:
    """Registered jobs still alive (stale files of dead ones are removed)."""
    n = 0
    for entry in registry().glob("*.job"):
        pid_s, _, started = entry.stem.partition("-")
        alive = pid_s.isdigit() and pid_alive(int(pid_s)) and (not started or _start_time(int(pid_s)) in (None, started))
        if alive:
            n += 1
        else:
            entry.unlink(missing_ok=True)
    return n


def share(cores: int | None = None) -> int:
    return max(1, (cores or machine_cores()) // max(1, live_jobs()))


def claim(fixed: int | None = None) -> int:
    """Register this process as a torch job and set its threads by the rule above; returns them.
    A fixed count stays until release(): a sweep worker's share is not undone by the load_study it calls."""
    import torch

    _state["fixed"] = fixed or _state["fixed"]
    if _state["path"] is None:
        pid = os.getpid()
        path = registry() / f"{pid}-{_start_time(pid) or ''}.job"
        path.touch()
        _state["path"] = path
        import atexit

        atexit.register(release)
        reuse_freed_memory()  # a torch job's batches repeat their allocations: reuse the pages
    n = fixed or (None if os.environ.get("OMP_NUM_THREADS") else share())
    if n and n != torch.get_num_threads():
        torch.set_num_threads(n)
    _state["threads"], _state["checked"] = torch.get_num_threads(), time.monotonic()
    return _state["threads"]


def refresh() -> None:
    """In a long loop: re-take this job's share every REFRESH_S seconds (cheap otherwise)."""
    if _state["path"] is None or time.monotonic() - _state["checked"] < REFRESH_S:
        return
    claim(_state["fixed"])


@contextmanager
def paused():
    """Not a torch job for a while (a sweep's parent waiting on its workers): do not count meanwhile."""
    was, fixed = _state["path"] is not None, _state["fixed"]
    release()
    try:
        yield
    finally:
        if was:
            claim(fixed)


def release() -> None:
    """Not a torch job any more (a pool worker going idle between tasks, the end of a job)."""
    if _state["path"] is not None:
        _state["path"].unlink(missing_ok=True)
        _state["path"] = None
    _state["fixed"] = None
