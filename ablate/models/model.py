"""Models: the seed's architecture, finding the seed, loading and saving members, parameter counts.

How to run (creating the seed, trained or imported, is ablate/train/seed.py):
    ablate seed                       # train the config's tiny Llama seed on its seed mix
    ablate seed --set seed.mode=import --set seed.import_path=/path/to/hf-model

Every member is the seed's architecture with other weights, so a member is stored
as weights only (`model.safetensors`) and loaded by building the seed's config and
reading the weights into it. Tied weights (embedding = LM head) are stored once,
under the first name in `state_dict()` order, the same way for every member so
merges line up tensor by tensor.
"""

from __future__ import annotations

import copy
import logging
import platform
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ablate
from ablate.core.config import StudyConfig
from ablate.core.errors import AblateError, UsageError
from ablate.data.units import study_tokenizer
from ablate.store.pool import Pool, seed_of, sha256_file


def versions() -> dict:
    import duckdb
    import safetensors
    import transformers

    return {"ablate": ablate.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "duckdb": duckdb.__version__,
            "python": platform.python_version()}


class _DefaultLossNotice(logging.Filter):
    """Drops transformers' "`loss_type=None` ... Using the default loss: `ForCausalLMLoss`": it is said for
    every model whose class name does not end in ForCausalLM (GPT-2's LMHeadModel), and the default is the
    causal-LM loss ablate trains with, so it tells the user nothing. Every other warning passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("loss_type=" in message and "Using the default loss" in message)


def quiet_transformers() -> None:
    """While ablate loads, builds and saves models: no transformers progress bars ("Loading weights",
    "Writing model shards") in front of ablate's own lines or one-line errors, and no default-loss notice.
    Idempotent; transformers' other warnings (a config it cannot honour, say) still reach the user."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    logger = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(f, _DefaultLossNotice) for f in logger.filters):
        logger.addFilter(_DefaultLossNotice())


def unique_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state_dict without the second name of tied tensors, contiguous, on CPU."""
    seen, out = set(), {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.shape, tensor.dtype) if tensor.numel() else (name,)
        if key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().to("cpu").contiguous()
    return out


def save_weights(state: dict[str, torch.Tensor], path: Path) -> str:
    """Write safetensors with fsync; return the file's sha256."""
    save_file(state, str(path), metadata={"format": "pt"})
    with open(path, "rb") as fh:
        import os
        os.fsync(fh.fileno())
    return sha256_file(path)


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load a weights-only state; names missing must be tied twins of loaded ones."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    current = model.state_dict()
    loaded_ptrs = {t.data_ptr() for n, t in current.items() if n in state}
    bad = [n for n in missing if current[n].data_ptr() not in loaded_ptrs]
    if unexpected or bad:
        raise AblateError(f"{where}: weights do not fit the seed architecture "
                          f"(unexpected {unexpected[:3]}, missing {bad[:3]})")


def check_fit(model: torch.nn.Module, names, where: str) -> dict[str, torch.Tensor]:
    """load_state's check for weights written in place: `names` must all be the model's and every
    other tensor a tied twin of one of them. Returns the state (it shares the parameters' storage)."""
    current = model.state_dict()
    unexpected = sorted(n for n in names if n not in current)
    loaded = {current[n].data_ptr() for n in names if n in current}
    bad = [n for n, t in current.items() if n not in names and t.data_ptr() not in loaded]
    if unexpected or bad:
        raise AblateError(f"{where}: weights do not fit the seed architecture "
                          f"(unexpected {unexpected[:3]}, missing {bad[:3]})")
    return current


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """(all unique parameters, non-embedding parameters: no token embedding / LM head)."""
    seen, total = set(), 0  # unique_state's rule, without its copy to the host (a GPU model)
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape, t.dtype) if t.numel() else (name,)
        if key not in seen:
            seen.add(key)
            total += t.numel() if t.is_floating_point() else 0
    emb = model.get_input_embeddings().weight.numel()
    out = model.get_output_embeddings()
    tied = out is None or out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    nonembed = total - emb - (0 if tied else out.weight.numel())
    return total, nonembed


def llama_config(cfg: StudyConfig, tok):
    from transformers import LlamaConfig

    s = cfg.seed
    return LlamaConfig(
        vocab_size=len(tok), hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
        num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.heads,
        max_position_embeddings=max(s.seq_len, cfg.train.seq_len, cfg.eval.seq_len),
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id, rms_norm_eps=1e-5)


# Config keys that are dropout-like probabilities (GPT-2's *_pdrop, OPT's layerdrop, *dropout* elsewhere),
# minus those of heads a causal LM never runs (classifier_dropout, GPT-2's summary_* for double heads):
# counting those would give GPT-NeoX (classifier_dropout 0.1) a dropout it does not train with.
_DROPOUT = re.compile(r"dropout|pdrop|layerdrop")
_HEAD_ONLY = re.compile(r"^(classifier|summary)_")


def dropout_of(config) -> dict[str, float]:
    """The stochastic-regularization probabilities a causal LM built from `config` trains with, by key."""
    return {k: float(v) for k, v in sorted(config.to_dict().items())
            if _DROPOUT.search(k) and not _HEAD_ONLY.search(k)
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def without_dropout(config):
    """A copy of `config` with every dropout_of probability set to 0 (the model must be built from it:
    nn.Dropout modules and attention layers copy their p at construction)."""
    config = copy.deepcopy(config)
    for key in dropout_of(config):
        setattr(config, key, 0.0)
    return config


def model_from_config(config, device=None) -> torch.nn.Module:
    """The architecture in float32, built directly on `device` (default CPU): no host copy of a GPU model."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    with torch.device(device or "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model


def seed_config(pool: Pool, seed_id: str):
    from transformers import AutoConfig

    quiet_transformers()
    seed_dir = pool.seed_dir(seed_id)
    if not seed_dir.is_dir():  # never created here: a step to run, not a damaged pool
        raise UsageError(f"seed {seed_id} is not in {pool.models_dir}: run `ablate seed` first")
    if not (seed_dir / "config.json").exists():
        raise AblateError(f"seed {seed_id} in {pool.models_dir} has no config.json (damaged pool?)")
    return AutoConfig.from_pretrained(str(seed_dir), local_files_only=True, trust_remote_code=False)


def check_weights_file(path: Path, meta: dict, full_hash: bool = False) -> None:
    """Cheap checks always (size, header); the sha256 on request."""
    if not path.exists():
        raise AblateError(f"weights missing: {path}")
    if "size" in meta and path.stat().st_size != meta["size"]:
        raise AblateError(f"weights {path} have {path.stat().st_size} bytes, expected {meta['size']} (truncated?)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            fh.keys()
    except Exception as exc:  # safetensors raises its own error types
        raise AblateError(f"weights {path} are not a valid safetensors file: {str(exc).splitlines()[0]}") from None
    if full_hash and sha256_file(path) != meta.get("sha256"):
        raise AblateError(f"weights {path} do not match their recorded sha256 (corrupted)")


def load_member(pool: Pool, model_id: str, full_hash: bool = False, device=None, config=None) -> torch.nn.Module:
    """A pool member as a float32 HF model on `device` (default CPU), its tensors read straight there.
    `config` replaces the seed's (the same architecture with other dropout, for training)."""
    meta = pool.read_meta(model_id)
    model = model_from_config(config or seed_config(pool, seed_of(meta)), device)
    path = pool.weights_path(model_id)
    check_weights_file(path, meta, full_hash)
    state = {}
    with safe_open(str(path), framework="pt", device=str(device or "cpu")) as fh:
        for key in fh.keys():
            state[key] = fh.get_tensor(key)
    load_state(model, state, str(path))
    model.eval()
    return model


def find_seed(pool: Pool) -> dict:
    """The study's seed: the one seed member whose tokenizer matches the units."""
    _, tok_id = study_tokenizer(pool)
    seeds = [m for m in pool.iter_metas("seed") if m.get("tokenizer_id") == tok_id]
    if not seeds:
        raise UsageError(f"no seed in {pool.root} for tokenizer {tok_id}: run `ablate seed` first")
    return max(seeds, key=lambda m: m["created_at"])
