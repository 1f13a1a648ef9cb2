"""One training job per member: an exclusive lock in the member's work directory.

Two `train-partition` runs of the same unit would otherwise both train from scratch
in the same `pool/work/<id>/` (double compute, one checkpoint overwriting the other's).
The lock is an flock on `pool/work/<id>/job.lock`, so the kernel drops it when its
holder dies: a SIGKILLed run leaves a file but no lock, and the rerun takes it over and
resumes from the checkpoint. The file says who holds it (pid, host, start time,
command), so a refused job can name the one that runs.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from ablate.core.errors import AblateError
from ablate.train.data_parallel import rank_world

LOCK_NAME = "job.lock"


def holder(path: Path) -> str:
    try:
        return Path(path).read_text().strip() or "an unknown process"
    except OSError:
        return "an unknown process"


def _open_locked(path: Path):
    """The lock file open and flocked, or None if a live process holds it.

    A holder that finishes unlinks the file; if we locked that unlinked file, the path
    now names another one, so try again on the new file."""
    while True:
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return None
        try:
            same = os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fh
        fh.close()


@contextmanager
def job_lock(work_dir: Path, what: str, enabled: bool = True):
    """Hold `work_dir`/job.lock for the block, or raise AblateError naming the job that holds it.

    `enabled=False` (the non-main processes of a data-parallel run) skips the lock: the
    main process holds it for all of them."""
    if not enabled:
        yield
        return
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK_NAME
    fh = _open_locked(path)
    if fh is None:
        raise AblateError(f"{what} is already being trained by {holder(path)}; wait for it to finish "
                          f"(or stop it: rerunning then resumes from its checkpoint)")
    try:
        fh.seek(0)
        fh.truncate()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {started} "
                 f"({' '.join(['ablate', *sys.argv[1:]])[:200]})\n")
        fh.flush()
        yield
    finally:
        # Unlink before unlocking: a job that opened the old file then sees another inode and retries.
        try:
            if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
                path.unlink()
        except FileNotFoundError:  # the work dir went with a published member
            pass
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()
        try:
            work_dir.rmdir()  # only if empty: a reused or published member leaves no work dir behind
        except OSError:
            pass


def clear_work(work_dir: Path) -> None:
    """--force: drop the checkpoints of an earlier run, keeping the lock this job holds."""
    import shutil

    for p in Path(work_dir).glob("*"):
        if p.name != LOCK_NAME:
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


@contextmanager
def member_job(pool, model_id: str, force: bool = False):
    """The one job allowed to train `model_id` (refuses otherwise, naming the holder).

    Yields the member's meta if another job published it meanwhile (nothing to train),
    else None. Under data-parallel training only the main process locks; every process
    clears the old checkpoints on --force before any of them loads one."""
    work_dir = pool.work_dir(model_id)
    with job_lock(work_dir, model_id, enabled=rank_world()[0] == 0):
        if pool.has_member(model_id) and not force:
            yield pool.read_meta(model_id) | {"reused": True}
            return
        if force:
            clear_work(work_dir)
        yield None
