"""Merging straight into a model's parameters, on whatever device the model is.

How to run (from Python; `score-mixture`, `sweep --mixtures`, `search` and `export-mixture` do this):
    from ablate.scoring.inplace import MemberSpace, merged_model
    model = merged_model(pool, seed_id, members, weights, full_hash=cfg.verify_hash, device="cuda")
    space = MemberSpace.of_members(pool, members, model); space.load(weights)   # weights as variables

The model's float32 parameters are the accumulator: the first member is written into
them times its weight, each next one added times its weight, reading each member file in
16 MB chunks into one reused host buffer. Memory therefore holds the model and one chunk,
on the host as on a GPU, for any number of members (bench/bench_device.py), where
merge_members + load_state held the model, the float32 sums and their copies. Per element
the float ops and their order are merge_members' (w0·m0, then += wi·mi), so the weights
are bit-identical to loading merge_members' result (tests/models/test_device.py).

MemberSpace is the same merged model with the weights as variables (the optimizer's gradients,
optimize/losses.py): theta(w) = sum_i w_i theta_i written into the model, and <g, theta_i> for every
member. Members are float32 safetensors whose data blocks are mapped, not read: each is a flat view of its
file, in the file's own tensor order (merge.flat_member). With room in memory (`keep_in_memory`, by default
when the stack takes under a quarter of free memory) they are copied into one [n, P] matrix and both products
are one matmul; otherwise they stay mapped and every step streams them from the page cache (n axpys + n dots
per step).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ablate.core.errors import AblateError, UsageError
from ablate.core.weights import parse_weights
from ablate.models.model import check_fit, load_state, model_from_config, seed_config
from ablate.scoring.batched import free_memory_bytes
from ablate.scoring.merge import all_finite, check_compatible, f32_block, flat_member, merge_members, read_f32_chunks
from ablate.store.pool import Pool, atomic_write_json, staged_dir


def merge_into(model: torch.nn.Module, pool: Pool, model_ids: list[str], weights: list[float] | None = None,
               full_hash: bool = False) -> None:
    """Load the weighted average of the members into `model` (any device), streaming them."""
    weights = parse_weights(weights, len(model_ids))
    check_compatible(pool, model_ids, full_hash)
    paths = [pool.weights_path(m) for m in model_ids]
    blocks = [f32_block(p) for p in paths]
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
            for a, piece in read_f32_chunks(path, blocks[i][0], blocks[i][1] // 4):
                _scatter(piece, a, spans, params, w, first=i == 0)
    for name in layout:
        if not all_finite(params[name]):
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


class MemberSpace:
    """theta(w) = sum_i w_i theta_i over the members' tensors, and <g, theta_i> for every member."""

    @classmethod
    def of_members(cls, pool: Pool, member_ids: list[str], model: torch.nn.Module, *, full_hash: bool = False,
                   keep_in_memory: bool | None = None) -> "MemberSpace":
        """The pool's members (same seed, tensor names, shapes and dtypes: checked first)."""
        check_compatible(pool, member_ids, full_hash)
        return cls([pool.weights_path(m) for m in member_ids], model, keep_in_memory=keep_in_memory)

    def __init__(self, paths: list, model: torch.nn.Module, *, keep_in_memory: bool | None = None):
        rows, self.spans = zip(*(flat_member(p) for p in paths))
        if any(s != self.spans[0] for s in self.spans):
            raise AblateError("members store their tensors in different orders; cannot stack them")
        self.spans = self.spans[0]
        check_fit(model, {name for _, _, name in self.spans}, "member weights")
        self.params = model.state_dict(keep_vars=True)  # the Parameters themselves: their .grad is read
        self.device = next(model.parameters()).device
        size = len(rows) * rows[0].numel() * 4
        if keep_in_memory is None:
            keep_in_memory = size < free_memory_bytes(self.device) // 4
        self.in_memory = keep_in_memory
        self.rows = torch.stack(rows).to(self.device) if keep_in_memory else list(rows)
        self.n = len(rows)

    def load(self, weights) -> None:
        """Write theta(w) into the model's tensors (any w: the gradient check leaves the simplex)."""
        w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        with torch.no_grad():
            if self.in_memory:
                theta = w.to(self.device) @ self.rows
            else:
                theta = torch.zeros(self.rows[0].numel(), dtype=torch.float32)
                for wi, row in zip(w.tolist(), self.rows):
                    theta.add_(row, alpha=wi)
                theta = theta.to(self.device)
            for begin, end, name in self.spans:
                self.params[name].copy_(theta[begin:end].view_as(self.params[name]))

    def project(self) -> np.ndarray:
        """<grad_theta, theta_i> for every member from the model's accumulated .grad (float64)."""
        g = torch.zeros(self.spans[-1][1], dtype=torch.float32, device=self.device)
        for begin, end, name in self.spans:
            grad = self.params[name].grad
            if grad is not None:
                g[begin:end] = grad.reshape(-1)
        if self.in_memory:
            return (self.rows @ g).double().cpu().numpy()
        g = g.cpu()
        return np.array([float(torch.dot(row, g)) for row in self.rows])
