"""Merging straight into a model's parameters, on whatever device the model is.

How to run (from Python; `score-mixture`, `sweep --mixtures`, `search` and `export-mixture` do this):
    from ablate.scoring.inplace import merged_model
    model = merged_model(pool, seed_id, members, weights, full_hash=cfg.verify_hash, device="cuda")

The model's float32 parameters are the accumulator: the first member is written into
them times its weight, each next one added times its weight, reading each member file in
16 MB chunks into one reused host buffer. Memory therefore holds the model and one chunk,
on the host as on a GPU, for any number of members (bench/bench_device.py), where
merge_members + load_state held the model, the float32 sums and their copies. Per element
the float ops and their order are merge_members' (w0·m0, then += wi·mi), so the weights
are bit-identical to loading merge_members' result (tests/test_device.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ablate.core.errors import AblateError, UsageError
from ablate.scoring.merge import _all_finite, _f32_block, _read_f32_chunks, check_compatible, merge_members
from ablate.models.model import check_fit, load_state, model_from_config, seed_config
from ablate.store.pool import Pool, atomic_write_json, staged_dir
from ablate.core.weights import parse_weights


def merge_into(model: torch.nn.Module, pool: Pool, model_ids: list[str], weights: list[float] | None = None,
               full_hash: bool = False) -> None:
    """Load the weighted average of the members into `model` (any device), streaming them."""
    weights = parse_weights(weights, len(model_ids))
    check_compatible(pool, model_ids, full_hash)
    paths = [pool.weights_path(m) for m in model_ids]
    blocks = [_f32_block(p) for p in paths]
    params = model.state_dict()
    if not all(b is not None and b[2] == blocks[0][2] for b in blocks) or \
            any(t.dtype != torch.float32 or not t.is_contiguous() for t in params.values()):
        device = next(model.parameters()).device  # other files (bf16, integer buffers): the general path
        load_state(model, merge_members(pool, model_ids, weights, device=device), "merged weights")
        return
    layout = blocks[0][2]
    params = check_fit(model, set(layout), "merged weights")
    spans = sorted((v["data_offsets"][0] // 4, v["data_offsets"][1] // 4, name) for name, v in layout.items())
    with torch.no_grad():
        for i, (path, w) in enumerate(zip(paths, weights)):
            for a, piece in _read_f32_chunks(path, blocks[i][0], blocks[i][1] // 4):
                _scatter(piece, a, spans, params, w, first=i == 0)
    for name in layout:
        if not _all_finite(params[name]):
            raise AblateError(f"merged tensor {name} has NaN/inf values (a member is corrupted?)")


def _scatter(piece: torch.Tensor, a: int, spans: list[tuple], params: dict, w: float, first: bool) -> None:
    """Apply one chunk (flat elements a.. of a member's data) to the parameters it covers."""
    b = a + piece.numel()
    for begin, end, name in spans:
        lo, hi = max(a, begin), min(b, end)
        if lo >= hi:
            continue
        dst = params[name].view(-1)[lo - begin:hi - begin]
        src = piece[lo - a:hi - a].to(dst.device)
        if first:
            torch.mul(src, w, out=dst)
        else:
            dst.add_(src, alpha=w)


def merged_model(pool: Pool, seed_id: str, model_ids: list[str], weights: list[float] | None = None, *,
                 full_hash: bool, device=None, build=None, model: torch.nn.Module | None = None) -> torch.nn.Module:
    """The members' merge as a model on `device` (default CPU), ready to evaluate or save.

    The one place that merges members, builds the model and loads the weights: score-mixture,
    search and fidelity (score.score_built_models), the sweep's listed mixtures
    (mixtures.score_entries) and export-mixture. `full_hash` is cfg.verify_hash, keyword and
    required so that no caller can drop it: every member file is hashed before it is read.
    `build(pool, seed_id, members, weights, device=)` is an evaluated proxy's state dict
    (task-sum); None is the weighted average, streamed into the parameters (merge_into).
    `model`, a model of this seed built by an earlier call, is overwritten instead of building
    another: a loop over mixtures holds one model."""
    if model is None:
        model = model_from_config(seed_config(pool, seed_id), device)
    if build is None:
        merge_into(model, pool, model_ids, weights, full_hash)
        return model
    if full_hash:  # build's own merge checks sizes and headers only
        check_compatible(pool, model_ids, full_hash=True)
    load_state(model, build(pool, seed_id, model_ids, weights, device=next(model.parameters()).device),
               "built weights")
    return model


def export_mixture(pool: Pool, seed_id: str, model_ids: list[str], weights: list[float], out: Path,
                   meta: dict, *, full_hash: bool, device=None) -> Path:
    """Write the merged model as a normal HF directory (config, tokenizer, safetensors)."""
    model = merged_model(pool, seed_id, model_ids, weights, full_hash=full_hash, device=device)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not empty")
    with staged_dir(out) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        seed_dir = pool.seed_dir(seed_id)
        for f in seed_dir.iterdir():
            if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "vocab.json", "merges.txt"):
                shutil.copy2(f, tmp / f.name)
        atomic_write_json(tmp / "ablate_mixture.json", meta)
    return out
