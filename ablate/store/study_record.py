"""Which study a pool belongs to: the `study` entry of pool/study.json.

How to run:
    ablate units split -c my_study.yaml      # records the study in my_pool/study.json
    ablate sweep                             # forgot -c: refused, naming both studies

`units split` records the settings that decide every number in the pool (the study's
name, how the corpus is read, how units and eval sets are cut, where the seed comes
from). Every command that opens the pool compares them with its own config and refuses
a different study in one line, so a forgotten `-c` can no longer score a user's pool
with the demo's settings. Settings that cannot change results already in the pool
(training recipe, evaluation, energy, jobs, device: they are part of row and member
ids, or of no result at all) are not compared; a pool may hold several recipes.
"""

from __future__ import annotations

from ablate.core.errors import UsageError
from ablate.store.pool import Pool, read_json

# dotted settings that define a study's data; a pool made with other values is another study
IDENTITY_KEYS = ("name", "corpus.source", "corpus.domain_field", "corpus.text_field", "units.unit_tokens",
                 "units.units_per_domain", "units.eval_bytes", "units.split_seed", "tokenizer.vocab_size",
                 "tokenizer.train_bytes", "seed.mode")


def identity(cfg) -> dict:
    out = {}
    for key in IDENTITY_KEYS:
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        out[key] = node
    return out


def check_pool_study(cfg, pool: Pool, config_label: str) -> None:
    """Refuse to run `cfg` against a pool recorded for another study (one line, exit 2)."""
    path = pool.root / "study.json"
    if not path.is_file():
        return
    recorded = read_json(path, "study record").get("study")
    if not recorded:  # a pool from before studies were recorded: the next `units split` records it
        return
    mine = identity(cfg)
    differ = [k for k in IDENTITY_KEYS if k in recorded and recorded[k] != mine[k]]
    if differ:
        what = "pool vs config: " + ", ".join(f"{k} {recorded[k]!r} vs {mine[k]!r}" for k in differ)
        advice = "pass the config it was split with (-c), or --set pool=DIR for a new pool"
        if recorded.get("name") == cfg.name:  # same name, other settings: say so, not "study X, not study X"
            raise UsageError(f"pool {pool.root} was split for study {cfg.name!r} with other settings than "
                             f"{config_label} gives ({what}): {advice}")
        raise UsageError(f"pool {pool.root} belongs to study {recorded.get('name')!r}, not to study {cfg.name!r} "
                         f"of {config_label} ({what}): {advice}")
