"""Concurrent writers, integrity checks, security rules and determinism."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import threading

import pytest

from ablate.core.errors import AblateError
from ablate.models.model import load_member
from ablate.store.index import Index
from ablate.train.loop import train_member

import warm
from conftest import run_cli, write_config


def _spawn(args, cfg_path):
    env = dict(os.environ, ABLATE_QUIET="1")
    return subprocess.Popen([warm.client(), *args, "-c", str(cfg_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_four_scorers_one_trainer_and_a_reader_at_once(study_copy, tmp_path):
    cfg, pool, _, _ = study_copy
    cfg_path = write_config(cfg, tmp_path / "c.yaml")
    Index(pool).rebuild()
    mixtures = [["fortunes-00", "fortunes-01"], ["fortunes-00", "literature-01"],
                ["fortunes-01", "literature-00"], ["literature-00", "literature-01"]]
    procs = [_spawn(["score-mixture", *m], cfg_path) for m in mixtures]
    procs.append(_spawn(["train-mixture", "fortunes-01", "literature-01"], cfg_path))
    reads, failures, stop = [0], [], threading.Event()

    def reader():  # `ablate sql` must keep answering while the writers run
        while not stop.is_set():
            try:
                Index(pool, timeout_s=60).query("SELECT count(*) FROM mixture_perplexity")
                reads[0] += 1
            except AblateError as exc:
                failures.append(str(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    outputs = [p.communicate(timeout=300) for p in procs]
    stop.set()
    thread.join()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert "locked" not in err.lower() and "could not set lock" not in err.lower()
    assert not failures and reads[0] > 0
    _, rows = Index(pool).query("SELECT method, model_id, eval_set, count(*) FROM mixture_perplexity GROUP BY ALL")
    assert {r[3] for r in rows} == {1}
    merged = {r[1] for r in rows if r[0] == "merged"}
    assert len(merged) == 4  # every scorer's rows landed, once
    _, models = Index(pool).query("SELECT count(*) FROM models WHERE kind = 'union'")
    assert models[0][0] == 2
    # the index agrees with the files it is derived from
    before = sorted(map(repr, Index(pool).query("SELECT * FROM mixture_perplexity ORDER BY row_id")[1]))
    Index(pool).rebuild()
    assert sorted(map(repr, Index(pool).query("SELECT * FROM mixture_perplexity ORDER BY row_id")[1])) == before


def test_truncated_and_bit_flipped_members_are_refused_others_keep_working(study_copy, tmp_path, capsys):
    cfg, pool, units, _ = study_copy
    metas = {m["units"][0]: m for m in pool.iter_metas("unit")}
    truncated = pool.weights_path(metas["fortunes-01"]["model_id"])
    truncated.write_bytes(truncated.read_bytes()[:-100])
    with pytest.raises(AblateError, match=str(truncated)):
        load_member(pool, metas["fortunes-01"]["model_id"])
    flipped = pool.weights_path(metas["literature-01"]["model_id"])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x10
    flipped.write_bytes(bytes(data))
    load_member(pool, metas["literature-01"]["model_id"])  # size and header still fine...
    with pytest.raises(AblateError, match="sha256"):
        load_member(pool, metas["literature-01"]["model_id"], full_hash=True)  # ...the hash is not
    cfg.verify_hash = True
    cfg_path = write_config(cfg, tmp_path / "c.yaml")
    code, _, err = run_cli(["score-mixture", "fortunes-00", "literature-01", "-c", str(cfg_path)], capsys)
    assert code == 1 and str(flipped) in err
    code, out, err = run_cli(["score-mixture", "fortunes-00", "literature-00", "-c", str(cfg_path)], capsys)
    assert code == 0, err
    code, out, _ = run_cli(["pool", "verify", "-c", str(cfg_path)], capsys)
    assert code == 1 and "4 members verified, 2 problems" in out


def test_reindex_after_the_index_is_corrupted(study_copy, tmp_path, capsys):
    cfg, pool, _, _ = study_copy
    cfg_path = write_config(cfg, tmp_path / "c.yaml")
    run_cli(["score-mixture", "fortunes-00", "literature-00", "-c", str(cfg_path)], capsys)
    before = sorted(map(repr, Index(pool).query("SELECT * FROM mixture_perplexity")[1]))
    pool.index_path.write_bytes(b"this is not a duckdb file" * 100)
    code, _, err = run_cli(["sql", "SELECT 1", "-c", str(cfg_path)], capsys)
    assert code == 1 and "reindex" in err and err.count("\n") == 1
    code, out, _ = run_cli(["pool", "reindex", "-c", str(cfg_path)], capsys)
    assert code == 0 and "models 6" in out
    assert sorted(map(repr, Index(pool).query("SELECT * FROM mixture_perplexity")[1])) == before


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/ablate-pwned",))


def test_checkpoints_never_unpickle_code(study_copy):
    cfg, pool, _, _ = study_copy
    member = next(m for m in pool.iter_metas("unit") if m["units"] == ["fortunes-01"])
    import shutil
    shutil.rmtree(pool.member_dir(member["model_id"]))
    work = pool.work_dir(member["model_id"])
    work.mkdir(parents=True)
    with open(work / "ckpt.pt", "wb") as fh:
        pickle.dump({"job": "x", "evil": _Payload()}, fh)
    if os.path.exists("/tmp/ablate-pwned"):
        os.remove("/tmp/ablate-pwned")
    meta = train_member(cfg, pool, ["fortunes-01"], log=lambda *a: None)
    assert not os.path.exists("/tmp/ablate-pwned")
    assert meta["resumed_from_step"] == 0 and meta["sha256"] == member["sha256"]


def test_remote_code_is_never_trusted(study, tmp_path):
    from ablate.train.seed import import_seed

    cfg, pool, _, _ = study
    seed = next(pool.iter_metas("seed"))
    src = tmp_path / "remote-code-model"
    import shutil
    shutil.copytree(pool.seed_dir(seed["model_id"]), src)
    config = json.loads((src / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"}
    config["model_type"] = "evil-arch"
    (src / "config.json").write_text(json.dumps(config))
    (src / "evil.py").write_text("open('/tmp/ablate-pwned-remote', 'w').write('x')\n")
    imp = cfg.model_copy(deep=True)
    imp.pool = str(tmp_path / "p")
    imp.seed.import_path = str(src)
    imp.seed.mode = "import"
    from ablate.store.pool import Pool
    with pytest.raises(AblateError):
        import_seed(imp, Pool(imp.pool))
    assert not os.path.exists("/tmp/ablate-pwned-remote")


def test_same_config_same_bits(study_copy):
    """Determinism: retraining a unit from scratch gives the same weights and perplexities, bit for bit."""
    cfg, pool, _, _ = study_copy
    from ablate.workflows.steps import score_mixture

    first = score_mixture(cfg, pool, ["fortunes-01"])
    member = next(m for m in pool.iter_metas("unit") if m["units"] == ["fortunes-01"])
    again = train_member(cfg, pool, ["fortunes-01"], force=True, log=lambda *a: None)
    assert again["sha256"] == member["sha256"] and again["config_hash"] == member["config_hash"]
    second = score_mixture(cfg, pool, ["fortunes-01"], force=True)
    key = lambda rows: sorted((r["method"], r["eval_set"], r["ppl"]) for r in rows)
    assert key(first) == key(second)


def test_an_index_from_an_older_schema_is_rebuilt(study_copy):
    """The index is derived: a file written by another ablate version is rebuilt, nothing lost."""
    import duckdb

    cfg, pool, _, _ = study_copy
    Index(pool).rebuild()
    con = duckdb.connect(str(pool.index_path))
    con.execute("DROP TABLE ablate_meta")
    con.execute("ALTER TABLE mixture_perplexity DROP COLUMN spec")
    con.close()
    assert Index(pool).query("SELECT count(*) FROM models")[1][0][0] == 6
    from ablate.workflows.steps import score_mixture
    rows = score_mixture(cfg, pool, ["fortunes-00", "literature-01"], eval_names=["fortunes"])
    assert {r["method"] for r in rows} >= {"merged", "seed"}


def test_members_is_the_models_table_under_the_name_the_commands_use(study_copy, tmp_path, capsys):
    cfg, _, _, _ = study_copy
    c = ["-c", str(write_config(cfg, tmp_path / "c.yaml"))]
    code, out, err = run_cli(["sql", "select kind, count(*) as n from members group by kind order by kind", "--format",
                              "csv", *c], capsys)
    assert code == 0, err
    assert out.splitlines() == ["kind,n", "seed,1", "union,1", "unit,4"]
