"""FIDELITY.md's sections owned by other commands: unit lengths (`--unit-steps`) and studies on their own
(`--section`), and that the protocol's full rewrite keeps them."""

from __future__ import annotations

import json

from ablate.fidelity.markdown import LENGTHS_HEADING, STUDY_PREFIX, own_sections, replace_section
from ablate.fidelity.protocol import write_markdown

from conftest import copy_study, run_cli, tree_digest, write_config


def test_replace_section_touches_only_its_own_section(tmp_path):
    path = tmp_path / "F.md"
    path.write_text("# Title\n\nintro\n\n## A\n\na body\n\n## B\n\nb body\n")
    replace_section(path, "## A", "## A\n\nnew a\n")
    replace_section(path, "## C", "## C\n\nc body\n")
    text = path.read_text()
    assert text.index("new a") < text.index("b body") < text.index("c body")
    assert "a body" not in text and text.startswith("# Title\n\nintro\n") and text.count("## A") == 1
    assert own_sections(text) == "" and "## C" not in own_sections(text)


def test_unit_lengths_and_a_study_section_survive_the_protocol_rewrite(study, tmp_path, capsys):
    cfg, _ = copy_study(study[0], tmp_path / "f")
    cfg.name = "tiny-lengths"
    cfg.fidelity.truth_mixtures = 5
    cfg.fidelity.noise_unions = 1
    cfg.fidelity.proxies = ["merged", "additive"]
    cfg.fidelity.title = "A tiny study on its own"
    path = write_config(cfg, tmp_path / "tiny.yaml")
    out = tmp_path / "F.md"
    base_steps = cfg.units.unit_tokens // (cfg.train.batch_size * cfg.train.seq_len)

    code, _, err = run_cli(["fidelity", str(path), "--unit-steps", f"{base_steps},{base_steps // 2}",
                            "--out", str(out)], capsys)
    assert code == 0, err
    raw = json.loads((tmp_path / "F-lengths.json").read_text())
    assert [r["steps"] for r in raw] == [base_steps // 2, base_steps]
    assert raw[0]["pool"] == cfg.pool + f"-{base_steps // 2}steps" and raw[1]["pool"] == cfg.pool
    assert raw[0]["unit_tokens"] * 2 == raw[1]["unit_tokens"] == cfg.units.unit_tokens
    short, long = (r["distance"]["unit"] for r in raw)
    assert 0 < short < long  # members trained twice as long moved further from the seed
    assert raw[0]["summary"]["evals"] == raw[1]["summary"]["evals"] == 2 and raw[0]["n_truths"] == raw[1]["n_truths"] >= 5
    assert all(set(r["true_best_rank"]) == {"fortunes", "literature"} and min(r["true_best_rank"].values()) >= 1
               for r in raw)
    assert (tmp_path / "F-lengths.png").stat().st_size > 10_000
    text = out.read_text()
    assert text.startswith(LENGTHS_HEADING) and f"| {base_steps // 2} | " in text and "![fidelity vs unit length]" in text

    code, _, err = run_cli(["fidelity", str(path), "--section", "--out", str(out)], capsys)
    assert code == 0, err
    text = out.read_text()
    assert LENGTHS_HEADING in text and STUDY_PREFIX + "A tiny study on its own" in text
    assert "**Verdict (raw uniform merge" in text and "| additive |" in text and "Price tag" in text
    assert json.loads((tmp_path / "F-tiny-lengths.json").read_text())["study"] == "tiny-lengths"
    assert "Optimized mixtures" not in text  # a study on its own trains no weighted unions

    write_markdown([], out, 1.0, [])  # what `make fidelity` does to the file
    rewritten = out.read_text()
    assert rewritten.startswith("# Fidelity") and own_sections(rewritten) == own_sections(text) != ""

    before = tree_digest(tmp_path)
    for bad in ("0,8", "a,b", ""):
        code, _, err = run_cli(["fidelity", str(path), "--unit-steps", bad, "--out", str(out)], capsys)
        assert code == 2 and err.count("error:") == 1 and "--unit-steps" in err and "Traceback" not in err
    assert tree_digest(tmp_path) == before


def test_the_header_names_the_configs_run_and_the_json_written(tmp_path):
    out = write_markdown([], tmp_path / "my.md", 90.0, ["my.yaml"])
    head = out.read_text().split("Every figure")[0]
    assert f"`ablate fidelity my.yaml --out {out}`" in head and "1 study, 1.5 min" in head
    assert "`my.json`" in head and (tmp_path / "my.json").exists()
    assert "make fidelity" not in head and "FIDELITY.json" not in head
