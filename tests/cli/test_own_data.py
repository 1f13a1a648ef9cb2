"""docs/own-data.md's own-data, own-eval-file and own-weights recipes, run verbatim on a corpus, a model and a
held-out file this test writes from real text on the machine (Debian copyright files,
changelogs, man pages; a tiny random Llama with a BPE trained on that text)."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ablate.core.config import StudyConfig
from ablate.core.errors import UsageError
from ablate.data.corpus import study_corpus

import warm

ROOT = Path(__file__).resolve().parents[2]


def _texts(pattern: str, limit: int) -> list[str]:
    docs, total = [], 0
    for path in sorted(Path("/usr/share").glob(pattern)):
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8", "replace").strip()
        if len(text) > 200:
            docs.append(text[:20_000])
            total += len(docs[-1])
        if total > limit:
            return docs
    pytest.skip(f"not enough text under /usr/share/{pattern}")


def write_corpus(folder: Path) -> None:
    folder.mkdir()
    domains = {"licenses": "doc/*/copyright", "changelogs": "doc/*/changelog.Debian.gz", "manuals": "man/man1/*.gz"}
    for domain, pattern in domains.items():
        with open(folder / f"{domain}.jsonl", "w") as fh:
            for doc in _texts(pattern, 250_000):
                fh.write(json.dumps({"text": doc, "subset": domain}) + "\n")


def write_model(folder: Path, corpus: Path) -> None:
    """A tiny random Llama and a byte-level BPE trained on the corpus: a stand-in for the user's model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [json.loads(line)["text"] for f in sorted(corpus.glob("*.jsonl")) for line in open(f)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1024, special_tokens=["<eos>"], show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", bos_token="<eos>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=128, max_position_embeddings=256,
                                         eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def write_whatis(path: Path, n: int = 60) -> None:
    """A multiple-choice task from the man pages' NAME lines: "ls -" and four descriptions, one of them its own."""
    pages, seen = [], set()
    for page in sorted(Path("/usr/share/man/man1").glob("*.gz")):
        text = gzip.decompress(page.read_bytes()).decode("utf-8", "replace")
        line = re.search(r"^\.SH\s+\"?NAME\"?\s*\n(.+?)\s+\\-\s+(.+)$", text, re.M)
        if line:
            name, what = (re.sub(r"\\f.|\\", "", g).strip() for g in line.groups())
            if 3 < len(what) < 80 and what not in seen:
                seen.add(what)
                pages.append((name, what))
    if len(pages) < n:
        pytest.skip("not enough man pages under /usr/share/man/man1")
    with open(path, "w") as fh:
        for i, (name, what) in enumerate(pages[:n]):
            choices = [f" {pages[(i + 7 * k) % n][1]}" for k in range(4)]  # k = 0: its own
            answer = i % 4
            choices[0], choices[answer] = choices[answer], choices[0]
            fh.write(json.dumps({"context": f"{name} -", "choices": choices, "answer": answer}) + "\n")


def readme_recipe(name: str) -> str:
    text = (ROOT / "docs" / "own-data.md").read_text()
    match = re.search(rf"<!-- recipe: {name} .*?-->\n```bash\n(.*?)```", text, re.S)
    assert match, f"docs/own-data.md has no {name} recipe"
    return match.group(1)


def run(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{warm.client().parent}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("ABLATE_CONFIG", None)
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_the_readme_own_data_and_own_eval_recipes_run_as_printed(tmp_path):
    write_corpus(tmp_path / "my_corpus")
    write_model(tmp_path / "my_model", tmp_path / "my_corpus")
    # 6 KB of the GPL (as much as a unit's own held-out text, units.eval_bytes): every recipe command evaluates it
    gpl = Path("/usr/share/common-licenses/GPL-3").read_text()[:6_000]
    docs = [p.strip() for p in gpl.split("\n\n") if p.strip()]
    (tmp_path / "my_heldout.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    write_whatis(tmp_path / "my_whatis.jsonl")
    done = run(readme_recipe("own-data"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "verdict" in done.stdout.lower() and (tmp_path / "my_pool" / "study.json").is_file()
    done = run(readme_recipe("own-eval"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "heldout" in done.stdout and (tmp_path / "my_pool" / "eval" / "eval-heldout.npy").is_file()
    # the merged mixture's row on the task carries its accuracy with an interval ("26.7% [16.7, 36.7]")
    merged = next(line for line in done.stdout.splitlines() if "merged" in line and "whatis" in line)
    assert re.search(r"\d+\.\d% \[\d+\.\d, \d+\.\d\]", merged), merged
    done = run(readme_recipe("own-weights"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    weights = yaml.safe_load((tmp_path / "weights.yaml").read_text())
    assert weights["objective"] == "mean(heldout,licenses)" and sum(weights["weights"].values()) == pytest.approx(1)
    assert "retrained on the held windows" in done.stdout and "heldout | licenses<=+2%" in done.stdout


def test_seed_domains_auto_takes_the_domains_left_over(tmp_path):
    write_corpus(tmp_path / "c")
    base = {"corpus": {"source": "files", "path": str(tmp_path / "c"), "domain_field": "subset"}}
    cfg = StudyConfig.model_validate(base | {"units": {"domains": ["licenses", "manuals"], "eval_only_domains": []}})
    assert cfg.seed.domains == "auto"
    assert set(study_corpus(cfg)) == {"licenses", "manuals", "changelogs"} and cfg.seed.domains == ["changelogs"]
    every = StudyConfig.model_validate(base | {"units": {"domains": ["licenses", "manuals", "changelogs"],
                                                         "eval_only_domains": []}})
    with pytest.raises(UsageError, match="seed.domains is auto.*seed.mode=import"):
        study_corpus(every)
    named = StudyConfig.model_validate(base | {"seed": {"domains": ["webster"]}, "units": {"domains": ["licenses"],
                                                                                          "eval_only_domains": []}})
    with pytest.raises(UsageError, match="seed.domains names webster, not a domain of"):
        study_corpus(named)
