from pathlib import Path

import pytest

from ablate.core.config import StudyConfig, load_config
from ablate.core.errors import UsageError

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.units.domains and cfg.pool


def test_demo_yaml_is_the_embedded_default(monkeypatch):
    # the file's paths are relative to configs/, the default's to the working directory: run from the root
    monkeypatch.chdir(ROOT)
    shipped, default = load_config(ROOT / "configs" / "demo.yaml"), StudyConfig()
    assert shipped.pool == str(ROOT / default.pool) and shipped.corpus.path == str(ROOT / default.corpus.path)
    assert shipped.model_copy(update={"pool": default.pool, "corpus": default.corpus}) == default


def test_relative_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / "s.yaml").write_text("pool: my_pool\ncorpus: {source: files, path: ../data}\n"
                                   "eval_sets: {held: held.jsonl, other: {path: /abs/o.jsonl}}\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("studies/s.yaml"), ["seed.import_path=models/m"])
    assert cfg.pool == str(folder / "my_pool") and cfg.corpus.path == str(tmp_path / "data")
    assert cfg.eval_sets["held"].path == str(folder / "held.jsonl") and cfg.eval_sets["other"].path == "/abs/o.jsonl"
    assert cfg.seed.import_path == "models/m"  # typed on the command line: relative to where the user is


def test_comma_lists_and_seed_domains_auto():
    cfg = load_config(None, ["units.domains=a,b, c", "units.eval_only_domains=", "corpus.source=files"])
    assert cfg.units.domains == ["a", "b", "c"] and cfg.units.eval_only_domains == []
    assert cfg.seed.domains == "auto"  # resolved from the corpus at `units split`
    # the Debian corpus: the demo's seed mix, written out in configs/demo.yaml (same id)
    assert load_config(None).seed.domains == ["webster", "fiction", "bible", "computing", "pydocs", "quotes"]


@pytest.mark.parametrize("overrides, expected", [
    (["train.learning_rate=1e-4"], "--set train.learning_rate=1e-4: unknown setting (did you mean train.lr?)"),
    (["trian.lr=3"], "--set trian.lr=3: unknown setting (did you mean train.lr?)"),
    (["units.domains=x,x"], "--set units.domains=x,x: units.domains has duplicates"),
])
def test_a_bad_override_blames_set_and_suggests(overrides, expected):
    with pytest.raises(UsageError) as err:
        load_config(None, overrides)
    assert str(err.value) == f"invalid config: {expected}"


def test_every_validation_error_is_shown_and_the_file_blamed(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("train: {lr: -1, batch_size: 0}\n")
    with pytest.raises(UsageError) as err:
        load_config(path, ["units.unit_tokens=x"])
    text = str(err.value)
    assert f"train.lr: Input should be greater than 0 (in {path})" in text
    assert f"train.batch_size: Input should be greater than or equal to 1 (in {path})" in text
    assert "--set units.unit_tokens=x:" in text and "more)" not in text


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
