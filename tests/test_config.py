from pathlib import Path

import pytest

from ablate.config import StudyConfig, load_config
from ablate.errors import UsageError
from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.units.domains and cfg.pool


def test_demo_yaml_is_the_embedded_default():
    assert load_config(ROOT / "configs" / "demo.yaml") == StudyConfig()


def test_overrides_are_typed_and_nested():
    cfg = load_config(None, ["train.lr=1e-4", "units.domains=[bible, fiction]", "energy.backend=estimate"])
    assert cfg.train.lr == 1e-4 and cfg.units.domains == ["bible", "fiction"]
    assert cfg.energy.backend == "estimate"


@pytest.mark.parametrize("overrides, fragment", [
    (["train.lr=-1"], "train.lr"),
    (["train.lr=fast"], "train.lr"),
    (["units.unit_tokens=0"], "units.unit_tokens"),
    (["train.bogus=1"], "train.bogus"),
    (["seed.mode=import"], "import_path"),
    (["seed.domains=[fiction]"], "overlap"),
    (["units.eval_only_domains=[fiction]"], "both"),
    (["energy.pue=0.5"], "energy.pue"),
    (["lr"], "key=value"),
])
def test_invalid_values_are_refused_with_the_field_named(overrides, fragment):
    with pytest.raises(UsageError) as err:
        load_config(None, overrides)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_invalid_yaml_and_wrong_shapes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: 1e-3\n")
    with pytest.raises(UsageError, match="invalid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UsageError, match="mapping"):
        load_config(bad)
    with pytest.raises(UsageError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UsageError, match="invalid YAML"):
        load_config(evil)


def test_cli_dry_run_prints_resolved_config(capsys):
    code, out, err = run_cli(["train-partition", "fiction-00", "--set", "train.lr=0.01", "--dry-run"], capsys)
    assert code == 0
    assert "lr: 0.01" in out


def test_cli_bad_config_is_one_line_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1, 2]\n")
    code, out, err = run_cli(["seed", "-c", str(bad)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: invalid config")
    assert "Traceback" not in err
