"""seed.epochs, passes over the seed mix, and the warning of a seed short of ~20 tokens per parameter (issue 41.5)."""

import numpy as np

from ablate.core.sections import SeedConfig
from ablate.data.units import load_unit_tokens
from ablate.train.loop import as_sequences
from ablate.train.seed import TOKENS_PER_PARAM, seed_identity, seed_sequences, train_seed


def test_seed_epochs_pass_over_a_small_mix_and_one_stays_out_of_the_id():
    mix = np.arange(10)[:, None]
    before = mix[np.random.default_rng(0).permutation(10)[:64]]  # the seed's sequences before epochs existed
    assert np.array_equal(seed_sequences(mix, 64, 1, 0), before) and len(before) == 10
    three = seed_sequences(mix, 64, 3, 0)
    assert len(three) == 30 and np.bincount(three[:, 0]).tolist() == [3] * 10  # each sequence three times
    assert len(seed_sequences(mix, 25, 3, 0)) == 25  # still capped at steps x batch size
    assert "epochs" not in seed_identity(SeedConfig())  # every seed id from before stays
    assert seed_identity(SeedConfig(epochs=2))["epochs"] == 2
    # which eval sets the seed knows labels targets in reports: never part of the id
    assert seed_identity(SeedConfig(knows=["quotes"])) == seed_identity(SeedConfig())
    assert set(seed_identity(SeedConfig())) == {"mode", "import_path", "domains", "hidden_size", "layers", "heads",
                                                 "intermediate_size", "steps", "lr", "warmup_steps", "batch_size",
                                                 "seq_len", "init_seed"}  # the fields every existing seed id hashed


def test_a_short_seed_says_what_it_saw_against_the_rule_and_what_to_set(study_copy):
    cfg, pool, _, _ = study_copy
    lines = []
    seed = train_seed(cfg, pool, log=lines.append)  # the fixture's seed, reused: the warning is said again
    assert seed.get("reused")
    warning = next(x for x in lines if x.startswith("warning: the seed trains on"))
    tokens = cfg.seed.steps * cfg.seed.batch_size * cfg.seed.seq_len
    assert f"{tokens:,} tokens" in warning and f"{seed['n_params']:,}" in warning
    assert f"Chinchilla's rule (~{TOKENS_PER_PARAM} tokens per parameter)" in warning
    assert f"{TOKENS_PER_PARAM * seed['n_params']:,}" in warning
    assert "seed.steps" in warning and "seed.epochs" in warning and "more text" in warning

    # a mix smaller than steps x batch size: more steps stop at its end, more epochs do not
    mix = sum(len(as_sequences(load_unit_tokens(pool, f"seedmix-{d}")[0], cfg.seed.seq_len)) for d in cfg.seed.domains)
    cfg.seed.steps, cfg.seed.epochs = -(-2 * mix // cfg.seed.batch_size) + 5, 2
    lines.clear()
    twice = train_seed(cfg, pool, log=lines.append)
    assert not twice.get("reused") and twice["model_id"] != seed["model_id"]
    assert twice["train_tokens"] == 2 * mix * cfg.seed.seq_len
    assert any("sees them 2 time(s) (seed.epochs)" in x for x in lines), lines
