import subprocess
import sys
from pathlib import Path

from ablate.store.index import Index
from ablate.train.loop import train_member
from ablate.workflows.steps import run_sweep

import warm
from conftest import run_cli, write_config


def test_python_dash_m_and_console_script():
    out = subprocess.run([sys.executable, "-m", "ablate", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "train-partition" in out.stdout
    script = Path(sys.executable).with_name("ablate")
    assert script.exists()
    bad = subprocess.run([str(script), "train-partition"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: ")


def test_the_tests_warm_ablate_ends_as_a_fresh_interpreter_does(study, tmp_path):
    """tests/warm.py stands in for `python -m ablate` where tests start many commands: same output, same exit code,
    killed by the same signal."""
    cfg, _, _, _ = study
    cfg_path = write_config(cfg, tmp_path / "c.yaml")
    codes = set()
    for args in (["sql", "SELECT count(*) FROM units WHERE kind = 'unit'"], ["sql", "SELECT nonsense"]):
        cold = subprocess.run([sys.executable, "-m", "ablate", *args, "-c", str(cfg_path)], capture_output=True,
                              text=True, timeout=120)
        hot = subprocess.run([warm.client(), *args, "-c", str(cfg_path)], capture_output=True, text=True, timeout=120)
        assert (hot.returncode, hot.stdout, hot.stderr) == (cold.returncode, cold.stdout, cold.stderr)
        codes.add(cold.returncode)
    assert codes == {0, 2}  # a result and a refusal, compared (a SIGKILL: tests/store/test_crash.py)


def test_pool_verify_finds_a_flipped_bit_and_keeps_the_rest(study_copy, tmp_path, capsys):
    cfg, pool, units, union = study_copy
    cfg_path = write_config(cfg, tmp_path / "c.yaml")
    code, out, err = run_cli(["pool", "verify", "-c", str(cfg_path)], capsys)
    assert code == 0 and "6 members verified, 0 problems" in out
    path = pool.weights_path(union["model_id"])
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    code, out, err = run_cli(["pool", "verify", "-c", str(cfg_path)], capsys)
    assert code == 1 and "5 members verified, 1 problems" in out and str(path) in out.replace("\n", "")
    code, out, err = run_cli(["pool", "ls", "-c", str(cfg_path)], capsys)
    assert code == 0 and "union" in out


def test_report_writes_markdown_and_plots(study_copy, tmp_path, capsys):
    cfg, pool, units, _ = study_copy
    run_sweep(cfg, pool, units, max_size=2, log=lambda *a: None)
    code, out, err = run_cli(["report", "--out", str(tmp_path / "rep"), "-c",
                              str(write_config(cfg, tmp_path / "c.yaml"))], capsys)
    assert code == 0, err
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "Pearson" in text and "retraining" in text and "Energy method" in text
    assert (tmp_path / "rep" / "fidelity-sum.png").stat().st_size > 1000  # one per ground truth
    assert (tmp_path / "rep" / "cost.png").stat().st_size > 1000


def test_codecarbon_meter_records_its_method_and_assumptions(study_copy):
    cfg, pool, units, _ = study_copy
    cfg.energy.backend = "codecarbon"
    cfg.energy.grid_g_co2e_per_kwh = 100.0
    meta = train_member(cfg, pool, ["literature-01"], force=True, log=lambda *a: None)
    assert meta["energy_method"].startswith("codecarbon")
    assert meta["energy_assumptions"]["grid_g_co2e_per_kwh"] == 100.0
    assert meta["energy_kwh"] > 0
    assert abs(meta["co2_kg"] - meta["energy_kwh"] * 0.1) < 1e-9 + 0.05 * meta["co2_kg"]


def test_search_dry_run_prints_its_plan_and_writes_nothing(study_copy, tmp_path, capsys):
    import yaml

    from conftest import tree_digest

    cfg, pool, units, _ = study_copy
    before = tree_digest(pool.root)
    code, out, err = run_cli(["search", "--target", "literature", "--max-size", "2", "--validate", "1", "--dry-run",
                              "-c", str(write_config(cfg, tmp_path / "c.yaml"))], capsys)
    assert code == 0, err
    assert yaml.safe_load(out)["pool"] == cfg.pool  # the resolved config; the plan rides along as comments
    assert "# search plan: objective" in out and "4 units, mixtures of up to 2" in out
    assert ("11 candidates (every mixture of up to 2 of the 4 units and the uniform mixture of all 4), "
            "all scored (exhaustive)") in out and "trains up to 1 union(s)" in out
    assert tree_digest(pool.root) == before
    code, _, err = run_cli(["search", "--target", "nope", "--dry-run", "-c", str(tmp_path / "c.yaml")], capsys)
    assert code == 2 and "nope" in err  # checked like a real run
    code, out, err = run_cli(["search", "--target", "literature", "--max-size", "1", "-c", str(tmp_path / "c.yaml")],
                             capsys)  # a real one: 4 units alone and the uniform mixture of all 4 (issue 41.7)
    assert code == 0 and "5 candidates (exhaustive: every mixture of up to 1 of the 4 units and the uniform " \
                         "mixture of all 4)" in out + err, err
    _, rows = Index(pool).query("SELECT mixture FROM searches")
    assert sorted(units) in [list(m) for (m,) in rows]
