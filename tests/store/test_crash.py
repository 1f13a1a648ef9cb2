"""Crash safety by fault injection: SIGKILL at seeded points, rerun, compare.

Each scenario kills a real `python -m ablate ...` process at a named fault point
(ablate/core/faults.py) chosen with a seeded RNG, reruns the same command, and checks:
the kill happened; no incomplete member is visible; every row recorded before is
still there; the final weights equal an uninterrupted run's; `pool verify` passes.
"""

from __future__ import annotations

import os
import random
import subprocess

import pytest

from ablate.scoring.verify import verify_pool
from ablate.store.index import Index

import warm
from conftest import run_cli, write_config

SEED = 1234
TRAIN_POINTS = ["train.step", "ckpt.saved", "publish.staged", "publish.renamed", "index.txn"]
# A unit member and a union run the same loop and publish the same way: between them every point is hit,
# each test also dies mid-training (train.step) once; the suite's time (make test < 10 min on 2 cores)
PARTITION_POINTS, MIXTURE_POINTS = TRAIN_POINTS[:3], ["train.step", *TRAIN_POINTS[3:]]


def ablate(args, cfg_path, fault=None):
    env = dict(os.environ, ABLATE_QUIET="1")
    env.pop("ABLATE_FAULT", None)
    if fault:
        env["ABLATE_FAULT"] = fault
    return subprocess.run([warm.client(), *args, "-c", str(cfg_path)], env=env,
                          capture_output=True, text=True, timeout=300)


def visible_members_are_complete(pool):
    for d in pool.models_dir.iterdir():
        if d.name.startswith("."):
            continue  # staging dirs are invisible by construction
        assert (d / "meta.json").exists() and (d / "model.safetensors").exists(), d


def snapshot(pool):
    idx = Index(pool)
    return ({r[0] for r in idx.query("SELECT model_id FROM models")[1]},
            {r[0] for r in idx.query("SELECT row_id FROM mixture_perplexity")[1]})


def points(labels, nth_max, n=5, seed=SEED):
    """n seeded (label, nth) pairs covering every label at least once."""
    rng = random.Random(seed)
    chosen = [(lab, rng.randint(1, nth_max.get(lab, 1))) for lab in labels]
    while len(chosen) < n:
        lab = rng.choice(labels)
        chosen.append((lab, rng.randint(1, nth_max.get(lab, 1))))
    return chosen


def crash_and_recover(cfg_path, pool, args, fault):
    models_before, rows_before = snapshot(pool)
    killed = ablate(args, cfg_path, fault)
    assert killed.returncode == -9, f"fault {fault} never fired: {killed.stderr[-500:]}"
    visible_members_are_complete(pool)
    again = ablate(args, cfg_path)
    assert again.returncode == 0, again.stderr
    models_after, rows_after = snapshot(pool)
    assert models_before <= models_after and rows_before <= rows_after
    ok, problems = verify_pool(pool)  # in-process: the same check as `ablate pool verify`
    assert not problems and ok == len([d for d in pool.models_dir.iterdir() if not d.name.startswith(".")])


@pytest.mark.parametrize("label, nth", points(PARTITION_POINTS, {"train.step": 8, "ckpt.saved": 2}, n=3))
def test_train_partition_survives_sigkill(label, nth, study_copy, tmp_path):
    cfg, pool, _, _ = study_copy
    cfg_path = write_config(cfg, tmp_path / "c.yaml")
    reference = {m["units"][0]: m["sha256"] for m in pool.iter_metas("unit")}
    member = next(m for m in pool.iter_metas("unit") if m["units"] == ["literature-01"])
    import shutil
    shutil.rmtree(pool.member_dir(member["model_id"]))  # train it again, from scratch
    crash_and_recover(cfg_path, pool, ["train-partition", "literature-01"], f"{label}:{nth}")
    assert pool.read_meta(member["model_id"])["sha256"] == reference["literature-01"]


@pytest.mark.parametrize("label, nth", points(MIXTURE_POINTS, {"train.step": 16, "ckpt.saved": 5}, n=3,
                                              seed=SEED + 1))
def test_train_mixture_survives_sigkill(label, nth, study_copy, tmp_path):
    cfg, pool, _, union = study_copy
    cfg_path = write_config(cfg, tmp_path / "c.yaml")
    import shutil
    shutil.rmtree(pool.member_dir(union["model_id"]))
    crash_and_recover(cfg_path, pool, ["train-mixture", *union["units"]], f"{label}:{nth}")
    assert pool.read_meta(union["model_id"])["sha256"] == union["sha256"]


@pytest.mark.parametrize("label, nth", points(["results.written", "index.txn"],
                                              {"results.written": 4, "index.txn": 4}, n=2, seed=SEED + 2))
# two points: a kill mid-mixture (sweep.mixture) is the train tests' and results.written's case already
def test_sweep_survives_sigkill(label, nth, study_copy, tmp_path):
    cfg, pool, units, _ = study_copy
    cfg.sweep_jobs = 1
    cfg_path = write_config(cfg, tmp_path / "c.yaml")
    crash_and_recover(cfg_path, pool, ["sweep", "--max-size", "2"], f"{label}:{nth}")
    _, rows = Index(pool).query("SELECT mixture, eval_set, count(*) FROM mixture_perplexity "
                                "WHERE method = 'merged' GROUP BY ALL")
    assert len(rows) == 20 and {r[2] for r in rows} == {1}  # every mixture (4 singles, 6 pairs) once per eval set


INDEX_WRITES = [(["score-mixture", "fortunes-00", "literature-01"], "index.txn:1"),
                (["score-mixture", "fortunes-01", "literature-00"], "results.written:1"),
                (["pool", "reindex"], "reindex.swap:1"),
                (["units", "split"], "index.txn:1"),
                (["seed"], "index.txn:1")]


@pytest.mark.parametrize("args, fault", INDEX_WRITES, ids=[" ".join(a) + "@" + f for a, f in INDEX_WRITES])
def test_index_writes_survive_sigkill(args, fault, study_copy, tmp_path, capsys):
    cfg, pool, _, _ = study_copy
    cfg_path = write_config(cfg, tmp_path / "c.yaml")
    # a result row in the index before the crash; in-process, as only the killed run needs its own process
    assert run_cli(["score-mixture", "fortunes-00", "fortunes-01", "-c", str(cfg_path)], capsys)[0] == 0
    crash_and_recover(cfg_path, pool, args, fault)
    counts = Index(pool).rebuild()
    assert counts["models"] == 6
