"""Models: the seed (created here or imported), loading members, parameter counts.

How to run:
    ablate seed                       # train the config's tiny Llama seed on its seed mix
    ablate seed --set seed.mode=import --set seed.import_path=/path/to/hf-model

Every member is the seed's architecture with other weights, so a member is stored
as weights only (`model.safetensors`) and loaded by building the seed's config and
reading the weights into it. Tied weights (embedding = LM head) are stored once,
under the first name in `state_dict()` order, the same way for every member so
merges line up tensor by tensor.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ablate.config import StudyConfig, config_hash
from ablate.errors import AblateError, UsageError
from ablate.pool import Pool, sha256_file
from ablate.results import now


def versions() -> dict:
    import duckdb
    import safetensors
    import transformers

    import ablate

    return {"ablate": ablate.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "duckdb": duckdb.__version__,
            "python": platform.python_version()}


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


def model_from_config(config, device=None) -> torch.nn.Module:
    """The architecture in float32, built directly on `device` (default CPU): no host copy of a GPU model."""
    from transformers import AutoModelForCausalLM

    with torch.device(device or "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model


def seed_config(pool: Pool, seed_id: str):
    from transformers import AutoConfig

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


def load_member(pool: Pool, model_id: str, full_hash: bool = False, device=None) -> torch.nn.Module:
    """A pool member as a float32 HF model on `device` (default CPU), its tensors read straight there."""
    meta = pool.read_meta(model_id)
    model = model_from_config(seed_config(pool, meta["seed_id"]), device)  # a seed's seed_id is its own id
    path = pool.weights_path(model_id)
    check_weights_file(path, meta, full_hash)
    state = {}
    with safe_open(str(path), framework="pt", device=str(device or "cpu")) as fh:
        for key in fh.keys():
            state[key] = fh.get_tensor(key)
    load_state(model, state, str(path))
    model.eval()
    return model


def write_seed(pool: Pool, model, tok, seed_id: str, meta: dict) -> Path:
    """Store the seed as a complete HF directory (config, tokenizer, weights) plus meta.json."""
    staging = pool.staging_dir(seed_id)
    try:
        model.config.save_pretrained(str(staging))
        tok.save_pretrained(str(staging))
        meta["sha256"] = save_weights(unique_state(model), staging / "model.safetensors")
        meta["size"] = (staging / "model.safetensors").stat().st_size
        return pool.publish(staging, meta)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def import_seed(cfg: StudyConfig, pool: Pool) -> dict:
    """Copy a local HF causal LM into the pool as the seed (weights re-saved as float32 safetensors)."""
    from transformers import AutoModelForCausalLM

    from ablate.tokenizer_id import tokenizer_id_of
    from ablate.units import load_tokenizer

    src = Path(cfg.seed.import_path)
    if not (src / "config.json").exists():
        raise UsageError(f"seed.import_path {src} is not a HF model directory (no config.json)")
    weight_files = sorted(src.glob("*.safetensors"))
    if not weight_files:
        raise UsageError(f"{src} has no *.safetensors weights (only safetensors are accepted)")
    tok_id = tokenizer_id_of(src)  # class, files and behaviour of the tokenizer as loaded
    digest = config_hash({"files": [sha256_file(p) for p in weight_files], "tok": tok_id})
    seed_id = f"seed-{digest}"
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
            "created_at": now()}
    write_seed(pool, model, tok, seed_id, meta)
    from ablate.index import Index, model_row

    Index(pool).upsert("models", [model_row(meta)])
    return meta


def find_seed(pool: Pool) -> dict:
    """The study's seed: the one seed member whose tokenizer matches the units."""
    from ablate.units import study_tokenizer

    _, tok_id = study_tokenizer(pool)
    seeds = [m for m in pool.iter_metas("seed") if m.get("tokenizer_id") == tok_id]
    if not seeds:
        raise UsageError(f"no seed in {pool.root} for tokenizer {tok_id}: run `ablate seed` first")
    return max(seeds, key=lambda m: m["created_at"])
