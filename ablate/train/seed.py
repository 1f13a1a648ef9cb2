"""The seed, the model every member starts from: pretrained here from random init or imported.

How to run:
    ablate seed                      # seed.mode: train: pretrain on the seed mix (seed.domains), or reuse it
    ablate seed --force              # retrain
    ablate seed --set seed.mode=import --set seed.import_path=/path/to/hf-model   # copy a local HF model

`make_seed` picks by seed.mode. A trained seed's loop, checkpoints, resume, energy metering
and publishing are train.run_training / train.run_and_publish, the same path as every
member; this module owns the seed's recipe, its data (the seedmix-* token files `units
split` wrote), its id and its directory in the pool (a complete HF model: config,
tokenizer, weights, meta.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ablate.core.config import StudyConfig, config_hash
from ablate.core.errors import AblateError, UsageError
from ablate.core.textfile import read_text
from ablate.data.tokenizer_id import tokenizer_id_of
from ablate.data.units import load_tokenizer, load_unit_tokens, seed_domains, study_tokenizer
from ablate.models.model import (
    count_params,
    dropout_of,
    llama_config,
    model_from_config,
    quiet_transformers,
    save_weights,
    unique_state,
    versions,
)
from ablate.store.pool import Pool, sha256_file
from ablate.store.results import now
from ablate.study.context import Recipe
from ablate.train.locks import member_job
from ablate.train.loop import as_sequences, index_member, run_and_publish


def make_seed(cfg: StudyConfig, pool: Pool, *, force: bool = False, log=print) -> dict:
    """The study's seed as seed.mode says: imported (seed.import_path) or pretrained; returns its meta."""
    if cfg.seed.mode == "import":
        return import_seed(cfg, pool)
    return train_seed(cfg, pool, force=force, log=log)


def seed_recipe(cfg: StudyConfig) -> Recipe:
    s, t = cfg.seed, cfg.train
    return Recipe(s.seq_len, s.batch_size, s.lr, s.warmup_steps, 0.1, t.weight_decay, t.beta1, t.beta2,
                  t.grad_clip, 1, s.init_seed, compile=t.compile)  # the seed trains compiled too (run_and_publish)


# Chinchilla's rule (Hoffmann et al. 2022): a compute-optimal model sees about 20 training tokens per parameter.
# Far below it a seed is mostly untrained (its members' differences say little); the warning quotes it.
TOKENS_PER_PARAM = 20


def seed_identity(seed) -> dict:
    """cfg.seed as the seed's id hashes it: `epochs` only when not 1, so seeds trained before it existed keep ids;
    never `knows` (which eval sets the seed knows labels targets in reports, it changes no weight)."""
    out = seed.model_dump(exclude={"knows"})
    if out["epochs"] == 1:
        del out["epochs"]
    return out


def seed_sequences(mix: np.ndarray, need: int, epochs: int, data_seed: int) -> np.ndarray:
    """The seed's training sequences: `epochs` shuffled passes over the mix, capped at `need` (steps x batch size:
    the seed's budget is set in steps). One pass is the mix's first permutation, as before epochs existed."""
    rng = np.random.default_rng(data_seed)
    order = np.concatenate([rng.permutation(len(mix)) for _ in range(epochs)])
    return mix[order[:need]]


def short_seed_warning(mix_seqs: int, seen_seqs: int, n_params: int, seed) -> str | None:
    """What the seed trains on against TOKENS_PER_PARAM tokens per parameter, and what to set, when short of it."""
    tokens, want = seen_seqs * seed.seq_len, TOKENS_PER_PARAM * n_params
    if tokens >= want:
        return None
    want_seqs = -(-want // seed.seq_len)
    steps, epochs = -(-want_seqs // seed.batch_size), -(-want_seqs // max(mix_seqs, 1))
    passes = seen_seqs / max(mix_seqs, 1)
    advice = [f"seed.steps >= {steps:,} (now {seed.steps})"]
    if epochs > seed.epochs:  # the mix runs out first: steps alone stop at its end
        advice.append(f"seed.epochs >= {epochs:,} (passes over the mix, now {seed.epochs}; more steps alone stop at "
                      f"the mix's end)")
    return (f"warning: the seed trains on {tokens:,} tokens ({seen_seqs:,} sequences of {seed.seq_len}, "
            f"{passes:.3g} pass(es) over its mix of {mix_seqs:,}): {tokens / n_params:.2g} per parameter of its "
            f"{n_params:,}. By Chinchilla's rule (~{TOKENS_PER_PARAM} tokens per parameter) it needs about "
            f"{want:,} to mean something; short of that it stays mostly untrained. Set {' and '.join(advice)}, give "
            f"the seed more text (seed.domains), or import a trained seed")


def _warn_short(cfg: StudyConfig, mix_seqs: int, seen_seqs: int, n_params: int, log) -> None:
    line = short_seed_warning(mix_seqs, seen_seqs, n_params, cfg.seed)
    if line:
        log(line)


def write_seed(pool: Pool, model, tok, seed_id: str, meta: dict) -> Path:
    """Store the seed as a complete HF directory (config, tokenizer, weights) plus meta.json."""
    with pool.staged_member(meta) as staging:
        model.config.save_pretrained(str(staging))
        tok.save_pretrained(str(staging))
        meta["sha256"] = save_weights(unique_state(model), staging / "model.safetensors")
        meta["size"] = (staging / "model.safetensors").stat().st_size
    return pool.member_dir(seed_id)


def train_seed(cfg: StudyConfig, pool: Pool, *, force: bool = False, stop_after: int | None = None,
               log=print) -> dict:
    """Pretrain a tiny Llama from random init on the seed mix (seedmix-* token files)."""
    from transformers import set_seed

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
    mix = np.concatenate(parts)
    need = cfg.seed.steps * recipe.batch_size
    seqs = seed_sequences(mix, need, cfg.seed.epochs, recipe.data_seed)
    if len(seqs) < need:
        log(f"note: the seed mix has {len(mix):,} sequences, fewer than seed.steps x batch_size = {need:,}: the seed "
            f"sees them {cfg.seed.epochs} time(s) (seed.epochs) and stops after {-(-len(seqs) // recipe.batch_size)} "
            f"steps")
    key = config_hash({"seed": seed_identity(cfg.seed), "tok": tok_id, "recipe": recipe.key(),
                       "data": sorted(m["data_sha256"] for m in metas)})
    seed_id = f"seed-{key}"
    if pool.has_member(seed_id) and not force:
        log(f"{seed_id} is already in the pool; reusing it (--force retrains)")
        meta = pool.read_meta(seed_id)
        if meta.get("n_params"):
            _warn_short(cfg, len(mix), len(seqs), meta["n_params"], log)
        index_member(pool, meta)
        return meta | {"reused": True}
    set_seed(cfg.seed.init_seed)
    model = model_from_config(llama_config(cfg, tok))
    _warn_short(cfg, len(mix), len(seqs), count_params(model)[0], log)
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


def import_seed(cfg: StudyConfig, pool: Pool) -> dict:
    """Copy a local HF causal LM into the pool as the seed (weights re-saved as float32 safetensors)."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()  # no "Loading weights" bar in front of ablate's lines
    src = Path(cfg.seed.import_path)
    if not (src / "config.json").exists():
        raise UsageError(f"seed.import_path {src} is not a HF model directory (no config.json)")
    weight_files = sorted(src.glob("*.safetensors"))
    if not weight_files:
        raise UsageError(f"{src} has no *.safetensors weights (only safetensors are accepted)")
    tok_id = tokenizer_id_of(src)  # class, files and behaviour of the tokenizer as loaded
    files = [sha256_file(p) for p in weight_files]
    seed_id = _import_id(files, tok_id, _config_json(src))
    legacy = _legacy_import_id(files, tok_id)
    if not pool.has_member(seed_id) and pool.has_member(legacy) and _same_config(pool, legacy, src):
        seed_id = legacy  # imported before the id covered config.json: the same model, its members stay valid
    if pool.has_member(seed_id):
        return pool.read_meta(seed_id) | {"reused": True}
    tok = load_tokenizer(src)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32, local_files_only=True,
                                                     trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise AblateError(f"cannot load model from {src}: {str(exc).splitlines()[0]}") from None
    n_params, n_nonembed = count_params(model)
    meta = {"model_id": seed_id, "kind": "seed", "units": [], "seed_id": seed_id, "replicate": 0,
            "source": str(src.resolve()), "n_params": n_params, "n_params_nonembed": n_nonembed,
            "train_tokens": 0, "steps": 0, "wall_s": 0.0, "cpu_s": 0.0, "energy_kwh": 0.0, "co2_kg": 0.0,
            "energy_method": "none (imported, not trained here)", "energy_assumptions": {},
            "flops": 0.0, "flops_convention": "6*N_nonembed*tokens", "device": "none",
            "config": {"import_path": str(src)}, "versions": versions(), "tokenizer_id": tok_id,
            "dropout": dropout_of(model.config), "created_at": now()}
    write_seed(pool, model, tok, seed_id, meta)
    index_member(pool, meta)
    return meta


# config.json keys that say where a model was loaded from or which transformers wrote it, not what it is
_COSMETIC = ("_name_or_path", "transformers_version")


def _config_json(src: Path) -> dict:
    """config.json as the id sees it: its contents minus _COSMETIC (config_hash sorts the keys)."""
    try:
        data = json.loads(read_text(src / "config.json"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{src / 'config.json'} is not readable JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{src / 'config.json'} is not a JSON object")
    return {k: v for k, v in data.items() if k not in _COSMETIC}


def _import_id(files: list[str], tok_id: str, config: dict) -> str:
    """An imported seed's id: its weight files, its tokenizer and its architecture config (dropout
    included: the same weights with dropout 0.1 and 0.0 train different members)."""
    return f"seed-{config_hash({'files': files, 'tok': tok_id, 'config': config})}"


def _legacy_import_id(files: list[str], tok_id: str) -> str:
    """The id imports had before config.json counted (weights and tokenizer only)."""
    return f"seed-{config_hash({'files': files, 'tok': tok_id})}"


def _same_config(pool: Pool, seed_id: str, src: Path) -> bool:
    """Whether the pool's seed `seed_id` (imported under the legacy id) has src's architecture and no
    dropout: then it is this model, and keeping its id keeps its members. With dropout its members were
    trained without seeded masks: a fresh id makes them train again, reproducibly."""
    from transformers import AutoConfig

    def comparable(config) -> dict:
        # the pool's copy was re-saved as float32 by the transformers of the time: dtype and origin differ
        return {k: v for k, v in config.to_dict().items()
                if k not in _COSMETIC + ("dtype", "torch_dtype", "architectures", "_commit_hash")}

    try:
        ours, theirs = (AutoConfig.from_pretrained(str(p), local_files_only=True, trust_remote_code=False)
                        for p in (pool.seed_dir(seed_id), src))
    except (OSError, ValueError):  # unreadable: not provably the same model, import afresh
        return False
    return comparable(ours) == comparable(theirs) and not any(dropout_of(theirs).values())
