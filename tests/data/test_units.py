import json
from collections import Counter

import numpy as np
import pytest

from ablate.data.corpus import fortunes_min_corpus, load_corpus, study_corpus
from ablate.data.units import split_documents, split_units
from ablate.store.pool import Pool

from conftest import tiny_config, tree_digest

quiet = dict(log=lambda *a: None)


@pytest.fixture
def fresh(tmp_path):
    fortunes_min_corpus(tmp_path / "corpus")
    cfg = tiny_config(tmp_path)
    return cfg, Pool(cfg.pool)


def test_units_have_equal_budgets_and_stable_ids(study):
    cfg, pool, units, _ = study
    rows = [json.loads((pool.units_dir / f"{u}.json").read_text()) for u in units]
    assert [r["n_tokens"] for r in rows] == [cfg.units.unit_tokens] * len(units)
    for r in rows:
        tokens = np.load(pool.units_dir / f"{r['unit_id']}.npy")
        assert tokens.size == cfg.units.unit_tokens and r["n_bytes"] > tokens.size  # > 1 byte per token
    assert sorted(units) == sorted(p.stem for p in pool.units_dir.glob("*-0?.json"))


def test_eval_and_train_documents_never_overlap(study):
    cfg, _, _, _ = study
    docs = load_corpus(cfg.corpus.path)
    for domain in ("fortunes", "literature", "riddles"):
        split = split_documents(domain, docs[domain], cfg.units.eval_bytes, cfg.units.split_seed)
        counts = Counter(docs[domain])
        shared = set(split.eval_docs) & set(split.train_docs)
        assert all(counts[d] > 1 for d in shared)  # only texts the corpus itself repeats
        assert len(split.eval_docs) + len(split.train_docs) == len(docs[domain])
        assert sum(len(d.encode()) for d in split.eval_docs) >= cfg.units.eval_bytes


def test_split_is_deterministic_and_cached(fresh, tmp_path):
    cfg, pool = fresh
    first = split_units(cfg, pool, study_corpus(cfg), **quiet)
    assert first["cache_hits"] == 0
    second = split_units(cfg, pool, study_corpus(cfg), **quiet)
    assert second["cache_hits"] == 2 * len(cfg.all_domains)  # train + eval stream per domain
    assert set(second["status"].values()) == {"unchanged"}
    # a second pool elsewhere gets the same ids and the same data hashes
    other = tiny_config(tmp_path / "other")
    other.corpus.path = cfg.corpus.path
    third = split_units(other, Pool(other.pool), study_corpus(other), **quiet)
    key = lambda res: sorted((r["unit_id"], r["data_sha256"]) for r in res["rows"])
    assert key(first) == key(third)


def test_changed_settings_do_not_overwrite_units(fresh):
    cfg, pool = fresh
    split_units(cfg, pool, study_corpus(cfg), **quiet)
    before = tree_digest(pool.root)
    changed = cfg.model_copy(deep=True)
    changed.units.unit_tokens = 2048
    with pytest.raises(Exception, match="already exists"):
        split_units(changed, pool, study_corpus(changed), **quiet)
    assert tree_digest(pool.root) == before


def test_a_unit_domain_in_the_seed_mix_gives_the_seed_only_documents_no_unit_holds(tmp_path):
    """The seed may share a unit's domain (the paper's Wikipedia seed and M2D2 Wikipedia units), never its tokens:
    its seed-mix stream is the domain's training stream after the last unit, from the next whole document."""
    fortunes_min_corpus(tmp_path / "corpus")
    cfg = tiny_config(tmp_path, **{"seed.domains": ["riddles", "fortunes"]})
    pool = Pool(cfg.pool)
    split_units(cfg, pool, study_corpus(cfg), **quiet)
    mix = np.load(pool.units_dir / "seedmix-fortunes.npy")
    units = [np.load(pool.units_dir / f"fortunes-{i:02d}.npy") for i in range(cfg.units.units_per_domain)]
    stream = np.concatenate(units)
    assert mix.size > 0
    # the units are the stream's start, and the seed's part begins after them, at a document start
    n = stream.size
    windows = np.lib.stride_tricks.sliding_window_view(mix, 64)[::64]
    unit_windows = {w.tobytes() for w in np.lib.stride_tricks.sliding_window_view(stream, 64)}
    assert not any(w.tobytes() in unit_windows for w in windows), "the seed mix repeats a unit's tokens"
    assert n == cfg.units.unit_tokens * cfg.units.units_per_domain
    riddles = json.loads((pool.units_dir / "seedmix-riddles.json").read_text())
    assert riddles["n_tokens"] > 0  # a domain no unit holds still gives its whole training stream
