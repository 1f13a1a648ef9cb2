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
    code, _, err = run_cli([*args, "-c", str(write_config(empty, tmp_path / "c.yaml"))], capsys)
    assert code == 2 and err.count("\n") == 1 and f"run `{hint}` first" in err, err


def test_no_seed_hint_exits_2(study_copy, tmp_path, capsys):
    from ablate.models.model import seed_config

    cfg, pool, _, _ = study_copy
    seed = next(pool.iter_metas("seed"))
    shutil.rmtree(pool.seed_dir(seed["model_id"]))
    code, _, err = run_cli(["train-partition", "fortunes-00", "--force", "-c",
                            str(write_config(cfg, tmp_path / "c.yaml"))], capsys)
    assert code == 2 and "run `ablate seed` first" in err, err
    from ablate.core.errors import UsageError
    with pytest.raises(UsageError, match="run `ablate seed` first"):
        seed_config(pool, seed["model_id"])
