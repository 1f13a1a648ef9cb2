"""A step not run yet: the hint names the command to run first, in one line, exit 2."""

from __future__ import annotations

import shutil

import pytest

from conftest import run_cli, write_config


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
    path = write_config(empty, tmp_path / "c.yaml")
    code, _, err = run_cli([*args, "-c", str(path)], capsys)
    # the printed command repeats the user's -c: followed as printed, it runs on this study, not the demo's
    assert code == 2 and err.count("\n") == 1 and f"run `{hint} -c {path}` first" in err, err


def test_a_hint_without_c_names_the_pool_and_config_and_suggests_c(study, tmp_path, monkeypatch, capsys):
    cfg, _, _, _ = study
    mine = cfg.model_copy(deep=True)
    mine.pool = str(tmp_path / "my_pool")  # the user's study, in a file; the default pool is empty
    write_config(mine, tmp_path / "my_study.yaml")
    (tmp_path / "pool").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ABLATE_CONFIG", raising=False)
    code, _, err = run_cli(["sweep"], capsys)  # the -c forgotten
    assert code == 2 and err.count("\n") == 1, err
    assert "run `ablate units split` first" in err and f"pool {tmp_path / 'pool'}" in err
    assert "embedded default config, no -c given" in err and "pass it: -c my_study.yaml" in err


def test_no_seed_hint_exits_2(study_copy, tmp_path, capsys):
    from ablate.models.model import seed_config

    cfg, pool, _, _ = study_copy
    seed = next(pool.iter_metas("seed"))
    shutil.rmtree(pool.seed_dir(seed["model_id"]))
    path = write_config(cfg, tmp_path / "c.yaml")
    code, _, err = run_cli(["train-partition", "fortunes-00", "--force", "-c", str(path)], capsys)
    assert code == 2 and f"run `ablate seed -c {path}` first" in err, err
    from ablate.core.errors import UsageError
    with pytest.raises(UsageError, match="run `ablate seed` first"):
        seed_config(pool, seed["model_id"])


def test_optimize_names_every_missing_member_with_the_users_set_and_c(study_copy, tmp_path, capsys):
    """`optimize --units ... --set train.lr=0.0001`: another recipe, so neither member exists; the hint names both,
    one command each, repeating the -c and the --set (followed without them it trains the wrong member)."""
    from conftest import tree_digest

    cfg, pool, _, _ = study_copy
    path = write_config(cfg, tmp_path / "my_study.yaml")
    before = tree_digest(pool.root)
    code, _, err = run_cli(["optimize", "--target", "literature", "--units", "fortunes-00,literature-00",
                            "--set", "train.lr=0.0001", "-c", str(path)], capsys)
    assert code == 2 and err.count("\n") == 1, err
    for unit in ("fortunes-00", "literature-00"):
        assert f"`ablate train-partition {unit} -c {path} --set train.lr=0.0001`" in err, err
    assert "2 units have no trained member" in err and tree_digest(pool.root) == before
    # a dedicated flag (--max-epochs) is the optimizer's, not the member's: not repeated as a --set
    code, _, err = run_cli(["optimize", "--target", "literature", "--units", "fortunes-00,literature-00",
                            "--max-epochs", "3", "--set", "train.lr=0.0001", "-c", str(path)], capsys)
    assert code == 2 and "optimize.max_epochs" not in err and "--set train.lr=0.0001`" in err, err


def test_names_take_comma_lists_and_a_near_miss_gets_did_you_mean(study_copy, tmp_path, capsys):
    cfg, _, _, _ = study_copy
    c = ["-c", str(write_config(cfg, tmp_path / "c.yaml"))]
    code, out, err = run_cli(["score-mixture", "fortunes-00", "literature-00", "--eval", "fortunes,literature", *c],
                             capsys)
    assert code == 0, err
    assert "fortunes " in out and "literature " in out  # `--eval a,b` as `--target a,b`: both eval sets scored
    (tmp_path / "mixes.txt").write_text("fortunes-00 literatur-00\n")
    for args, refusal in [
        (["score-mixture", "fortunes-00", "literature-00", "--eval", "fortune"],
         "unknown eval set 'fortune' (known: fortunes, literature); did you mean 'fortunes'?"),
        (["score-mixture", "fortunes_00", "literature-00"], "unknown unit 'fortunes_00' (known: fortunes-00, "
         "fortunes-01, literature-00, literature-01); did you mean 'fortunes-00'?"),
        (["sweep", "--units", "fortunes-00,literatur-00"], "did you mean 'literature-00'?"),
        (["sweep", "--mixtures", str(tmp_path / "mixes.txt")], "mixes.txt:1: unknown unit 'literatur-00'"),
        (["search", "--target", "literatur"], "--target: unknown eval set 'literatur' (known: fortunes, literature); "
         "did you mean 'literature'?"),
        (["search", "--target", "fortunes", "--max-loss", "literatur:2"], "did you mean 'literature'?"),
        (["search", "--target", "fortunes", "--method", "mergd"], "--method: unknown proxy method 'mergd'"),
        (["search", "--target", "fortunes", "--method", "mergd"], "did you mean 'merged'?"),
        (["score-mixture", "fortunes-00", "literature-00", "--eval", "klingon"], "(known: fortunes, literature)"),
    ]:
        code, _, err = run_cli([*args, *c], capsys)
        assert code == 2 and err.count("\n") == 1 and refusal in err, (args, err)
    assert "did you mean" not in err  # nothing close: the list alone
