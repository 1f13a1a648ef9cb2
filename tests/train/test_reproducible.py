"""Members are reproducible when the seed trains with dropout (issue 22).

A tiny GPT-2 (its config's default dropout: 0.1 resid/embd/attn) with a byte-level BPE trained
here on the fortunes-min text is imported as the seed; one unit member of 8 steps is trained,
retrained (--force), resumed after an interruption and trained with `train.dropout=zero`.
An imported seed's id covers its config.json; members of seeds trained here keep their ids.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from conftest import bpe_tokenizer, tiny_config

EOS = "<|endoftext|>"
UNIT = ["fortunes-00"]
PDROP = ("attn_pdrop", "embd_pdrop", "resid_pdrop")


def _gpt2_seeds(tok_dir: Path, root: Path) -> tuple[Path, Path]:
    """Two HF directories with the same weight file: GPT-2's dropout 0.1, and every dropout 0."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    drop = root / "gpt2-dropout"
    shutil.copytree(tok_dir, drop)
    tok = AutoTokenizer.from_pretrained(str(drop), local_files_only=True)
    config = GPT2Config(n_embd=48, n_layer=2, n_head=4, n_positions=128, vocab_size=len(tok),
                        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    assert all(getattr(config, k) == 0.1 for k in PDROP)  # HF's default: what users import
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(str(drop), safe_serialization=True)
    plain = root / "gpt2-no-dropout"
    shutil.copytree(drop, plain)
    cfg_json = json.loads((plain / "config.json").read_text())
    (plain / "config.json").write_text(json.dumps(cfg_json | {k: 0.0 for k in PDROP}, indent=2))
    return drop, plain


@pytest.fixture(scope="module")
def gpt2_study(tmp_path_factory):
    """(cfg, pool, the two seed dirs): units split with the dropout-0.1 GPT-2 imported as the seed."""
    from ablate.data.corpus import fortunes_min_corpus, study_corpus
    from ablate.data.units import split_units
    from ablate.store.pool import Pool
    from ablate.train.seed import import_seed

    root = tmp_path_factory.mktemp("repro")
    fortunes_min_corpus(root / "corpus")
    bpe_tokenizer(root / "corpus", root / "tokenizer", EOS)
    drop, plain = _gpt2_seeds(root / "tokenizer", root)
    cfg = tiny_config(root, **{"seed.mode": "import", "seed.import_path": str(drop), "units.units_per_domain": 1,
                               "units.eval_bytes": 3000, "train.checkpoint_every": 100})
    pool = Pool(cfg.pool)
    import_seed(cfg, pool)
    split_units(cfg, pool, study_corpus(cfg), log=lambda *a: None)
    return cfg, pool, drop, plain


@pytest.fixture(scope="module")
def kept(gpt2_study):
    """The unit member trained with the seed's dropout (train.dropout=keep, the default), and the log."""
    from ablate.models.model import find_seed, load_member
    from ablate.train.loop import train_member

    cfg, pool, _, _ = gpt2_study
    lines: list[str] = []
    # building the model draws its (overwritten) init from the caller's generator; training draws nothing
    # from it: its seeding stays inside training (fork_rng)
    before = torch.get_rng_state()
    load_member(pool, find_seed(pool)["model_id"])
    after_init = torch.get_rng_state()
    torch.set_rng_state(before)
    meta = train_member(cfg, pool, UNIT, log=lines.append)
    assert torch.equal(torch.get_rng_state(), after_init)
    return meta, lines


def test_a_dropout_member_retrains_to_the_same_weights_and_says_it_trains_with_dropout(gpt2_study, kept):
    from ablate.train.loop import train_member

    cfg, pool, _, _ = gpt2_study
    meta, lines = kept
    assert meta["dropout"] == {k: 0.1 for k in PDROP} and meta["steps"] == 8
    assert any("training with the seed's dropout" in line and "train.dropout=zero" in line for line in lines), lines
    torch.manual_seed(12345)  # whatever state the caller's generator is in
    again = train_member(cfg, pool, UNIT, force=True, log=lambda *a: None)
    assert again["model_id"] == meta["model_id"] and not again.get("reused")
    assert again["sha256"] == meta["sha256"]
    assert pool.read_meta(meta["model_id"])["sha256"] == meta["sha256"]


def test_a_resumed_dropout_member_ends_as_the_uninterrupted_one(gpt2_study, kept):
    from ablate.core.errors import Interrupted
    from ablate.train.loop import train_member

    cfg, pool, _, _ = gpt2_study
    meta, _ = kept
    shutil.rmtree(pool.member_dir(meta["model_id"]))
    with pytest.raises(Interrupted):
        train_member(cfg, pool, UNIT, stop_after=3, log=lambda *a: None)
    torch.manual_seed(999)  # a new process would start from another generator state
    resumed = train_member(cfg, pool, UNIT, log=lambda *a: None)
    assert resumed["resumed_from_step"] == 3
    assert resumed["sha256"] == meta["sha256"]


def test_zero_dropout_trains_without_it_under_another_id_and_scoring_finds_each(gpt2_study, kept):
    from ablate.study.context import load_study
    from ablate.train.loop import train_member

    cfg, pool, _, _ = gpt2_study
    meta, _ = kept
    zero_cfg = cfg.model_copy(deep=True)
    zero_cfg.train.dropout = "zero"
    lines: list[str] = []
    zero = train_member(zero_cfg, pool, UNIT, log=lines.append)
    assert zero["dropout"] == {k: 0.0 for k in PDROP} and zero["config"]["train"]["dropout"] == "zero"
    assert zero["model_id"] != meta["model_id"] and zero["sha256"] != meta["sha256"]
    assert not any("dropout" in line for line in lines), lines
    # scoring asks member_id the same question training did, under each setting
    assert load_study(cfg, pool).unit_member(UNIT[0]) == meta["model_id"]
    assert load_study(zero_cfg, pool).unit_member(UNIT[0]) == zero["model_id"]


def test_an_imported_seeds_id_covers_its_config_and_an_old_import_keeps_its_id(gpt2_study, tmp_path, monkeypatch):
    from ablate.store.pool import Pool, sha256_file
    from ablate.train import seed as seed_mod

    cfg, _, drop, plain = gpt2_study
    assert sha256_file(drop / "model.safetensors") == sha256_file(plain / "model.safetensors")

    def imported(src: Path, pool) -> dict:
        c = cfg.model_copy(deep=True)
        c.seed.import_path = str(src)
        return seed_mod.import_seed(c, pool)

    fresh = Pool(tmp_path / "fresh")
    with_dropout, without = imported(drop, fresh), imported(plain, fresh)
    assert with_dropout["model_id"] != without["model_id"]
    assert with_dropout["dropout"] == {k: 0.1 for k in PDROP} and not any(without["dropout"].values())

    # a pool that imported both before config.json counted: the old id was the same for the two
    old = Pool(tmp_path / "old")
    monkeypatch.setattr(seed_mod, "_import_id", lambda files, tok, config: seed_mod._legacy_import_id(files, tok))
    legacy = imported(plain, old)["model_id"]
    assert imported(drop, old)["model_id"] == legacy  # the defect: weights and tokenizer only
    monkeypatch.undo()
    # no dropout, same config: the old seed stays (and with it every member it has); with dropout: a new one
    assert imported(plain, old) == old.read_meta(legacy) | {"reused": True}
    assert imported(drop, old)["model_id"] == with_dropout["model_id"] != legacy


def test_members_of_a_seed_trained_here_keep_their_ids(study):
    """A seed trained here has no dropout (Llama, attention_dropout 0): its members' ids are those
    of the formula before dropout counted, under either setting."""
    from ablate.core.config import config_hash
    from ablate.data.units import unit_meta
    from ablate.study.context import load_study, member_recipe

    cfg, pool, units, _ = study
    seed = next(pool.iter_metas("seed"))
    zero_cfg = cfg.model_copy(deep=True)
    zero_cfg.train.dropout = "zero"
    for unit in units:
        key = config_hash({"seed": seed["model_id"], "data": [unit_meta(pool, unit)["data_sha256"]],
                           "recipe": _before_optimizer(asdict(member_recipe(cfg))), "replicate": 0})
        meta = next(m for m in pool.iter_metas("unit") if m["units"] == [unit])
        assert meta["model_id"] == f"unit-{unit}-{key[:10]}" and meta["config_hash"] == key
        assert meta["dropout"] == {"attention_dropout": 0.0}
        assert load_study(zero_cfg, pool).unit_member(unit) == meta["model_id"]


def _before_optimizer(recipe: dict) -> dict:
    """The recipe's fields before train.optimizer, train.compile and train.start existed (their defaults, auto,
    false and seed, must not move an id)."""
    assert recipe.pop("optimizer") == "auto" and recipe.pop("compile") is False and recipe.pop("start") == "seed"
    return recipe
