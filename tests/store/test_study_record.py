"""A pool remembers its study: a forgotten -c (the demo's settings on a user's pool) is refused,
settings that cannot change results already in the pool are not."""

from __future__ import annotations

from conftest import run_cli, tree_digest, write_config


def test_a_forgotten_config_is_refused_naming_both_studies(study_copy, tmp_path, capsys):
    cfg, pool, units, _ = study_copy
    before = tree_digest(pool.root)
    # no -c: the embedded demo study, pointed at this pool
    code, _, err = run_cli(["score-mixture", units[0], units[2], "--set", f"pool={pool.root}"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    # both are named 'demo': the refusal says what differs, never "study 'demo', not study 'demo'"
    assert f"pool {pool.root} was split for study 'demo' with other settings" in err and "not to study" not in err
    assert "embedded default config" in err
    assert "corpus.source 'files' vs 'debian'" in err and "units.unit_tokens 4096 vs 98304" in err
    renamed = cfg.model_copy(deep=True)
    renamed.name = "other"
    code, _, err = run_cli(["sweep", "-c", str(write_config(renamed, tmp_path / "o.yaml"))], capsys)
    assert code == 2 and "name 'demo' vs 'other'" in err
    # the same study name with other data settings: the refusal names what differs, not "'demo', not 'demo'"
    code, _, err = run_cli(["sweep", "-c", str(write_config(cfg, tmp_path / "s.yaml")), "--set", "units.unit_tokens=2048"],
                           capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "not to study" not in err and f"was split for study {cfg.name!r} with other settings" in err
    assert "units.unit_tokens 4096 vs 2048" in err
    assert tree_digest(pool.root) == before


def test_settings_that_do_not_change_results_are_accepted(study_copy, tmp_path, capsys):
    cfg, pool, units, _ = study_copy
    path = write_config(cfg, tmp_path / "s.yaml")
    code, out, err = run_cli(["score-mixture", units[0], units[2], "-c", str(path), "--set", "sweep_jobs=2",
                              "--set", "eval.batch_size=3", "--set", "energy.pue=1.2"], capsys)
    assert code == 0, err
