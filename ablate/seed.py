"""Pretraining the seed from random init (seed.mode: train): the model every member starts from.

How to run:
    ablate seed                      # pretrain on the seed mix (seed.domains), or reuse it
    ablate seed --force              # retrain

The loop, checkpoints, resume, energy metering and publishing are train.run_training /
train.run_and_publish, the same path as every member; this module owns the seed's
recipe, its data (the seedmix-* token files `units split` wrote) and its id. An imported
seed (seed.mode: import) is model.import_seed.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ablate.config import StudyConfig, config_hash
from ablate.locks import member_job
from ablate.pool import Pool
from ablate.study import Recipe
from ablate.train import as_sequences, index_member, run_and_publish
from ablate.units import load_unit_tokens


def seed_recipe(cfg: StudyConfig) -> Recipe:
    s, t = cfg.seed, cfg.train
    return Recipe(s.seq_len, s.batch_size, s.lr, s.warmup_steps, 0.1, t.weight_decay, t.beta1, t.beta2,
                  t.grad_clip, 1, s.init_seed)



def train_seed(cfg: StudyConfig, pool: Pool, *, force: bool = False, stop_after: int | None = None,
               log=print) -> dict:
    """Pretrain a tiny Llama from random init on the seed mix (seedmix-* token files)."""
    from transformers import set_seed

    from ablate.model import llama_config, model_from_config, write_seed
    from ablate.units import load_tokenizer, seed_domains, study_tokenizer

    pool.ensure_writable()
    tok_dir, tok_id = study_tokenizer(pool)
    tok = load_tokenizer(tok_dir)
    if cfg.seed.domains == "auto":  # the resolved list goes into the seed's id, as if it were written out
        cfg = cfg.model_copy(deep=True)
        cfg.seed.domains = seed_domains(cfg, pool)
    recipe = seed_recipe(cfg)
    parts, metas = [], []
    for domain in cfg.seed.domains:
        tokens, meta = load_unit_tokens(pool, f"seedmix-{domain}")
        parts.append(as_sequences(tokens, recipe.seq_len))
        metas.append(meta)
    seqs = np.concatenate(parts)
    # Cap the mix at exactly `steps` batches: the seed's budget is set in steps.
    need = cfg.seed.steps * recipe.batch_size
    seqs = seqs[np.random.default_rng(recipe.data_seed).permutation(len(seqs))[:need]]
    if len(seqs) < need:
        log(f"note: the seed mix has {len(seqs)} sequences, fewer than {need}; the seed sees them once")
    key = config_hash({"seed": cfg.seed.model_dump(), "tok": tok_id, "recipe": asdict(recipe),
                       "data": sorted(m["data_sha256"] for m in metas)})
    seed_id = f"seed-{key}"
    if pool.has_member(seed_id) and not force:
        log(f"{seed_id} is already in the pool; reusing it (--force retrains)")
        meta = pool.read_meta(seed_id)
        index_member(pool, meta)
        return meta | {"reused": True}
    set_seed(cfg.seed.init_seed)
    model = model_from_config(llama_config(cfg, tok))
    meta = {"model_id": seed_id, "kind": "seed", "units": [], "seed_id": seed_id, "replicate": 0,
            "tokenizer_id": tok_id, "config_hash": key, "data_sha256": {m["unit_id"]: m["data_sha256"] for m in metas},
            "config": {"seed": cfg.seed.model_dump(), "energy": cfg.energy.model_dump()}}

    def publish(trained, meta):
        write_seed(pool, trained, tok, seed_id, meta)

    with member_job(pool, seed_id, force) as done:
        meta = done or run_and_publish(pool, cfg, model, seqs, recipe, meta, description="pretrain seed",
                                        stop_after=stop_after, publish=publish)
    index_member(pool, meta)
    return meta
