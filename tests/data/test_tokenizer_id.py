"""Tokenizer identity (issue 12, item 4): the id covers what the loaded tokenizer does.

Two seed directories with the same tokenizer.json but another tokenizer class in
tokenizer_config.json (Qwen2 vs GPT-NeoX) tokenize differently; they must get different
ids, and a pool cut with one must refuse, loudly and untouched, to switch to the other.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from ablate.data.corpus import fortunes_min_corpus
from ablate.data.tokenizer_id import PROBE_TEXT, tokenizer_id_of
from ablate.data.units import load_tokenizer
from ablate.store.pool import Pool

from conftest import run_cli, tiny_config, tree_digest, write_config

CLASSES = {"qwen2": "Qwen2TokenizerFast", "neox": "GPTNeoXTokenizerFast"}


@pytest.fixture(scope="module")
def seed_dirs(study, tmp_path_factory):
    """The study's seed as two HF directories: one tokenizer.json, two tokenizer classes."""
    from ablate.models.model import load_member

    cfg, pool, _, _ = study
    seed = next(pool.iter_metas("seed"))
    model, tok = load_member(pool, seed["model_id"]), load_tokenizer(pool.seed_dir(seed["model_id"]))
    root = tmp_path_factory.mktemp("seeds")
    dirs = {}
    for name, cls in CLASSES.items():
        d = root / name
        model.save_pretrained(str(d))
        tok.save_pretrained(str(d))
        conf = json.loads((d / "tokenizer_config.json").read_text())
        (d / "tokenizer_config.json").write_text(json.dumps(conf | {"tokenizer_class": cls}, indent=2))
        dirs[name] = d
    return dirs


def test_same_tokenizer_json_other_class_gets_another_id(seed_dirs):
    qwen, neox = seed_dirs["qwen2"], seed_dirs["neox"]
    assert (qwen / "tokenizer.json").read_bytes() == (neox / "tokenizer.json").read_bytes()
    tq, tn = load_tokenizer(qwen), load_tokenizer(neox)
    assert type(tq).__name__ != type(tn).__name__
    # (this 512-token BPE has no merge the two pre-tokenizers split differently, so the probe's ids
    # agree here; with a real vocabulary they do not, e.g. 24 vs 23 tokens. The class alone must tell.)
    assert len(tq(PROBE_TEXT, add_special_tokens=False)["input_ids"]) > 20
    assert tokenizer_id_of(qwen) != tokenizer_id_of(neox)
    assert tokenizer_id_of(qwen) == tokenizer_id_of(qwen, tq)  # stable, and the same with a loaded tokenizer
    legacy = lambda d: hashlib.sha256((d / "tokenizer.json").read_bytes()).hexdigest()[:16]  # noqa: E731
    assert legacy(qwen) == legacy(neox)  # what the old id saw: nothing


def test_switching_an_imported_tokenizer_is_refused_loudly(seed_dirs, tmp_path, capsys):
    fortunes_min_corpus(tmp_path / "corpus")
    cfg = tiny_config(tmp_path, **{"seed.mode": "import", "seed.import_path": str(seed_dirs["qwen2"]),
                                   "units.domains": ["fortunes"], "units.units_per_domain": 1})
    path = write_config(cfg, tmp_path / "c.yaml")
    code, _, err = run_cli(["units", "split", "-c", str(path)], capsys)
    assert code == 0, err
    pool = Pool(cfg.pool)
    old_id, new_id = tokenizer_id_of(seed_dirs["qwen2"]), tokenizer_id_of(seed_dirs["neox"])
    assert json.loads((pool.root / "study.json").read_text())["tokenizer_id"] == old_id
    before = tree_digest(pool.root)
    switch = ["--set", f"seed.import_path={seed_dirs['neox']}"]
    code, _, err = run_cli(["units", "split", "-c", str(path), *switch], capsys)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert old_id in err and new_id in err and "--force" in err and "fresh pool" in err
    assert tree_digest(pool.root) == before  # no seed imported, no token written
    code, out, err = run_cli(["units", "split", "-c", str(path), *switch, "--force"], capsys)
    assert code == 0, err
    assert f"tokenizer changed: {old_id} -> {new_id}" in out
    assert json.loads((pool.root / "study.json").read_text())["tokenizer_id"] == new_id
    units = json.loads((pool.units_dir / "fortunes-00.json").read_text())
    assert units["tokenizer_id"] == new_id


def test_a_retrained_tokenizer_is_refused_too(study_copy):
    """seed.mode=train: changing the tokenizer settings of a pool names both ids and writes nothing."""
    from ablate.core.errors import UsageError
    from ablate.data.corpus import study_corpus
    from ablate.data.units import split_units

    cfg, pool, _, _ = study_copy
    old = json.loads((pool.root / "study.json").read_text())["tokenizer_id"]
    before = tree_digest(pool.root)
    cfg.tokenizer.vocab_size = 400
    with pytest.raises(UsageError, match=f"tokenized with {old}, the config now gives tok-"):
        split_units(cfg, pool, study_corpus(cfg), log=lambda *a: None)
    assert tree_digest(pool.root) == before
