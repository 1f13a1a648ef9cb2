"""Smaller things a user hit (issue 12, item 7): one test each."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from ablate.index import Index
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
from ablate.locks import job_lock
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


def test_fidelity_with_fewer_than_3_unions_says_n_a(study_copy):
    from ablate.report import verdict_markdown
    from ablate.score import score_mixture

    cfg, pool, _, union = study_copy
    score_mixture(cfg, pool, union["units"], eval_names=["fortunes"])  # the only union: one mixture
    _, rows = Index(pool).query("SELECT n_mixtures, pearson_log_ppl, spearman_log_ppl, top1_agree, regret "
                                "FROM proxy_fidelity WHERE proxy = 'merged'")
    assert rows and all(r[0] == 1 and r[1:] == (None,) * 4 for r in rows)
    text = verdict_markdown(pool)
    table = [line for line in text.splitlines() if line.startswith("| sum |")]
    assert table and all(line.split(" | ")[3:7] == ["n/a"] * 4 for line in table), table
    assert "yes" not in " ".join(table) and "0 %" not in " ".join(table)
    assert "fewer than 3 mixtures" in text


@pytest.mark.parametrize("args, hint", [
    (["seed"], "ablate units split"),
    (["train-partition", "fortunes-00"], "ablate units split"),
    (["score-mixture", "fortunes-00", "literature-00"], "ablate units split"),
    (["sweep"], "ablate units split"),
])
def test_run_x_first_hints_exit_2(args, hint, study, tmp_path, capsys):
    cfg, _, _, _ = study
    empty = cfg.model_copy(deep=True)
    empty.pool = str(tmp_path / "empty-pool")
    (tmp_path / "empty-pool").mkdir()
    code, _, err = run_cli([*args, "-c", str(write_config(empty, tmp_path / "c.yaml"))], capsys)
    assert code == 2 and err.count("\n") == 1 and f"run `{hint}` first" in err, err


def test_no_seed_hint_exits_2(study_copy, tmp_path, capsys):
    from ablate.model import seed_config

    cfg, pool, _, _ = study_copy
    seed = next(pool.iter_metas("seed"))
    shutil.rmtree(pool.seed_dir(seed["model_id"]))
    code, _, err = run_cli(["train-partition", "fortunes-00", "--force", "-c",
                            str(write_config(cfg, tmp_path / "c.yaml"))], capsys)
    assert code == 2 and "run `ablate seed` first" in err, err
    from ablate.errors import UsageError
    with pytest.raises(UsageError, match="run `ablate seed` first"):
        seed_config(pool, seed["model_id"])


def test_a_rerun_says_it_resumes_and_the_final_loss_says_what_it_is(study_copy, tmp_path, capsys):
    from ablate.errors import Interrupted
    from ablate.train import train_member

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


def test_manpages_rendering_shows_progress(monkeypatch, tmp_path):
    from contextlib import contextmanager

    from ablate import debian, progress

    pages = [f"/usr/share/man/man1/p{i}.1.gz" for i in range(3)]
    calls = []

    @contextmanager
    def recording_bar(description, total, completed=0, fields=None):
        calls.append(("open", description, total))
        yield lambda advance=1, **values: calls.append(("update", advance, values.get("page")))

    monkeypatch.setattr(debian, "_man_page_files", lambda: pages)
    monkeypatch.setattr(debian, "_render_man", lambda page, cache: f"NAME\n    {page}")
    monkeypatch.setattr(progress, "bar", recording_bar)
    docs = list(debian._manpages({"cache_dir": str(tmp_path)}))
    assert len(docs) == 3
    assert calls[0] == ("open", "manpages: rendering", 3)
    assert calls[1:] == [("update", 1, f"p{i}.1.gz") for i in range(3)]
