"""Job locks and resumed training, as a user meets them on the command line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from conftest import run_cli, write_config

quiet = dict(log=lambda *a: None)


def _forget(pool, unit):
    """Delete a unit's trained member (so the next run trains it); return its meta."""
    member = next(m for m in pool.iter_metas("unit") if m["units"] == [unit])
    shutil.rmtree(pool.member_dir(member["model_id"]))
    return member


HOLD = """
import sys, time
from pathlib import Path
from ablate.train.locks import job_lock
with job_lock(Path(sys.argv[1]), "test"):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_job_for_the_same_member_is_refused_and_a_dead_ones_lock_taken_over(study_copy, tmp_path, capsys):
    cfg, pool, _, _ = study_copy
    member = _forget(pool, "literature-01")
    work = pool.work_dir(member["model_id"])
    cfg_path = write_config(cfg, tmp_path / "c.yaml")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, _, err = run_cli(["train-partition", "literature-01", "-c", str(cfg_path)], capsys)
        assert code == 1 and err.count("\n") == 1, err
        assert f"pid {holder.pid} on " in err and "already being trained" in err
        code, _, err = run_cli(["train-mixture", "literature-01", "-c", str(cfg_path), "--force"], capsys)
        assert code == 1 and f"pid {holder.pid}" in err  # --force does not break a live job's lock
    finally:
        holder.kill()
        holder.wait()
    assert not pool.has_member(member["model_id"])
    # SIGKILLed: its lock file stays, naming a dead pid; the kernel dropped the lock itself
    assert f"pid {holder.pid}" in (work / "job.lock").read_text()
    code, out, err = run_cli(["train-partition", "literature-01", "-c", str(cfg_path)], capsys)
    assert code == 0, err
    assert pool.read_meta(member["model_id"])["sha256"] == member["sha256"]
    assert not work.exists()  # published: no work dir, no lock left behind


def test_a_rerun_says_it_resumes_and_the_final_loss_says_what_it_is(study_copy, tmp_path, capsys):
    from ablate.core.errors import Interrupted
    from ablate.train.loop import train_member

    cfg, pool, _, _ = study_copy
    member = _forget(pool, "fortunes-01")
    with pytest.raises(Interrupted):
        train_member(cfg, pool, ["fortunes-01"], stop_after=3, **quiet)
    capsys.readouterr()
    code, out, err = run_cli(["train-partition", "fortunes-01", "-c", str(write_config(cfg, tmp_path / "c.yaml"))],
                             capsys)
    assert code == 0, err
    steps = member["steps"]
    assert f"train fortunes-01: resuming from step 3 of {steps}" in err
    meta = pool.read_meta(member["model_id"])
    assert meta["sha256"] == member["sha256"] and meta["resumed_from_step"] == 3
    n = max(1, steps // 10)
    assert f"final loss {meta['final_loss']:.3f} (mean of the last {n} step" in out
    assert meta["final_loss"] == pytest.approx(sum(meta["loss_curve"][-n:]) / n)
    code, out, _ = run_cli(["train-partition", "fortunes-01", "-c", str(tmp_path / "c.yaml")], capsys)
    assert "resuming" not in out and re.search(r"final loss \d+\.\d{3} \(mean of the last \d+ steps?\)", out)
