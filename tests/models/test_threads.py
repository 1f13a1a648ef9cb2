"""The thread rule (ablate/models/threads.py): the machine's cores shared among the ablate jobs running on it."""

from __future__ import annotations

import subprocess
import sys

import torch

from ablate.models import threads


def test_jobs_share_the_cores_and_dead_jobs_do_not_count(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_JOBS_DIR", str(tmp_path))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "machine_cores", lambda: 8)
    before = torch.get_num_threads()
    threads.release()  # registered elsewhere by an earlier test of this process
    try:
        assert threads.claim() == 8 and threads.live_jobs() == 1
        sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(3)]
        for p in sleepers:  # three other jobs registered as the library does it
            (tmp_path / f"{p.pid}-{threads._start_time(p.pid)}.job").touch()
        (tmp_path / f"{2**22 + 7}-1.job").touch()  # a dead job's file (no such pid)
        threads._state["checked"] = 0.0
        threads.refresh()
        assert torch.get_num_threads() == 2 and threads.live_jobs() == 4
        assert not (tmp_path / f"{2**22 + 7}-1.job").exists()
        for p in sleepers:
            p.kill()
            p.wait()
        threads._state["checked"] = 0.0
        threads.refresh()
        assert torch.get_num_threads() == 8 and threads.live_jobs() == 1
        with threads.paused():  # a sweep's parent waiting on its workers
            assert threads.live_jobs() == 0
        assert threads.live_jobs() == 1
        assert threads.claim(3) == 3  # train.threads wins
    finally:
        threads.release()
        torch.set_num_threads(before)


def test_omp_num_threads_is_left_to_torch(tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_JOBS_DIR", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    threads.release()
    try:
        assert threads.claim() == before
    finally:
        threads.release()
