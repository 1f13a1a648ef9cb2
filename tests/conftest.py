"""Shared fixtures: a tiny but real study on the fortunes-min corpus (Debian package).

The session fixture `study` builds corpus -> units -> seed -> 4 unit members -> 1 union
once (about 20 s on 2 cores); tests that change the pool work on a copy (`study_copy`).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("ABLATE_QUIET", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core: one torch thread each (and in the commands they
    # spawn), or the workers fight over the cores and all run 4-10x slower
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

TINY = {
    "tokenizer": {"vocab_size": 512, "train_bytes": 200_000},
    "units": {"domains": ["fortunes", "literature"], "eval_only_domains": [], "unit_tokens": 4096,
              "units_per_domain": 2, "eval_bytes": 4000},
    "seed": {"domains": ["riddles"], "hidden_size": 32, "layers": 2, "heads": 2, "intermediate_size": 64,
             "steps": 16, "seq_len": 64, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2},
    "train": {"seq_len": 64, "batch_size": 8, "checkpoint_every": 3, "lr": 2e-3},
    "eval": {"seq_len": 64, "batch_size": 16},
    "energy": {"backend": "estimate"},
}


def tiny_config(root: Path, **overrides):
    import copy

    from ablate.core.config import StudyConfig

    tree = copy.deepcopy(TINY)
    tree["pool"] = str(root / "pool")
    tree["corpus"] = {"path": str(root / "corpus"), "source": "files"}
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        if field:
            tree.setdefault(section, {})[field] = value
        else:
            tree[section] = value
    return StudyConfig.model_validate(tree)


def write_config(cfg, path: Path) -> Path:
    path.write_text(cfg.to_yaml())
    return path


@pytest.fixture(scope="session")
def study(tmp_path_factory):
    """A built study: (cfg, pool, unit ids, union member meta)."""
    from ablate.data.corpus import fortunes_min_corpus, study_corpus
    from ablate.data.units import split_units
    from ablate.store.pool import Pool
    from ablate.train.loop import train_member
    from ablate.train.seed import train_seed

    root = tmp_path_factory.mktemp("study")
    fortunes_min_corpus(root / "corpus")
    cfg = tiny_config(root)
    pool = Pool(cfg.pool)
    split_units(cfg, pool, study_corpus(cfg), log=lambda *a: None)
    train_seed(cfg, pool, log=lambda *a: None)
    units = ["fortunes-00", "fortunes-01", "literature-00", "literature-01"]
    for u in units:
        train_member(cfg, pool, [u], log=lambda *a: None)
    union = train_member(cfg, pool, ["fortunes-00", "literature-00"], log=lambda *a: None)
    return cfg, pool, units, union


def copy_study(cfg, dst: Path):
    """The study's folder (pool and corpus) copied to dst: (its config there, its pool)."""
    from ablate.store.pool import Pool

    shutil.copytree(Path(cfg.pool).parent, dst, dirs_exist_ok=True)
    new_cfg = cfg.model_copy(deep=True)
    new_cfg.pool, new_cfg.corpus.path = str(dst / "pool"), str(dst / "corpus")
    return new_cfg, Pool(new_cfg.pool)


@pytest.fixture
def study_copy(study, tmp_path):
    """The built study copied to a fresh directory, safe to modify."""
    cfg, pool, units, union = study
    new_cfg, new_pool = copy_study(cfg, tmp_path / "copy")
    return new_cfg, new_pool, units, union


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `ablate ARGS` in-process through the real entry point (error handling included)."""
    from ablate.cli.app import main

    old = sys.argv
    sys.argv = ["ablate", *args]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under root, to prove nothing changed."""
    import hashlib

    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file() and p.name != ".index.lock":
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def bpe_tokenizer(corpus: Path, out: Path, eos: str = "<|endoftext|>") -> None:
    """A 512-token byte-level BPE trained on the corpus at `corpus`, saved as an HF fast tokenizer at `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from ablate.data.corpus import load_corpus

    docs = load_corpus(corpus)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=[eos], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([d for name in sorted(docs) for d in docs[name]], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=eos, bos_token=eos, unk_token=eos)
    fast.save_pretrained(str(out))
