"""Parameter averaging of pool members, streamed tensor by tensor.

How to run:
    ablate export-mixture fiction-00 bible-00 --out merged/       # a normal HF model dir
    ablate export-mixture fiction-00 bible-00 --weights 3,1 --out merged/

The average is accumulated in float32 and cast back to each tensor's dtype;
integer buffers are copied from the first member, not averaged. Weights are
normalized: uniform means every base unit counts once, so a domain with more
units weighs more (as in the paper). Tensors are read one key at a time from the
safetensors files (mergekit's lazy loading), so memory holds the accumulator plus
one tensor, never k models.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open

from ablate.errors import AblateError, UsageError
from ablate.model import check_weights_file
from ablate.pool import Pool


def parse_weights(raw: str | list[float] | None, k: int) -> list[float]:
    """Normalized mixture weights; refuse negative, NaN, infinite, all-zero or miscounted ones."""
    if raw is None or raw == "":
        return [1.0 / k] * k
    if isinstance(raw, str):
        try:
            values = [float(x) for x in raw.replace(" ", "").split(",")]
        except ValueError:
            raise UsageError(f"--weights must be comma-separated numbers, got {raw!r}") from None
    else:
        values = [float(x) for x in raw]
    if len(values) != k:
        raise UsageError(f"{len(values)} weights given for {k} units")
    if any(math.isnan(v) or math.isinf(v) for v in values):
        raise UsageError("weights must be finite numbers")
    if any(v < 0 for v in values):
        raise UsageError("weights must not be negative")
    total = sum(values)
    if total <= 0:
        raise UsageError("weights must not all be zero")
    return [v / total for v in values]


def parse_mixture(items: list[str], raw_weights: str | list[float] | None = None) -> tuple[list[str], list[float], str]:
    """Command-line mixture → (sorted units, their normalized weights, a readable spec).

    Each item is a unit or a macro group `a+b+c` (a merge of merges, as the paper's
    macro merges): a group is averaged first, then groups are averaged with the
    given weights, which is the same as unit weights w_group / |group|.
    """
    from ablate.pool import check_name

    if not items:
        raise UsageError("name at least one unit")
    groups = [[u.strip() for u in item.split("+")] for item in items]
    for group in groups:
        if any(not u for u in group):
            raise UsageError(f"malformed mixture item {'+'.join(group)!r}: use UNIT or UNIT+UNIT")
        for u in group:
            check_name(u, "unit id")
        if len(set(group)) != len(group):
            raise UsageError(f"unit listed twice in group {'+'.join(group)!r}")
    flat = [u for g in groups for u in g]
    if all(len(g) == 1 for g in groups) and len(set(flat)) != len(flat):
        raise UsageError(f"unit listed twice: {', '.join(sorted({u for u in flat if flat.count(u) > 1}))}")
    group_w = parse_weights(raw_weights, len(groups))
    unit_w: dict[str, float] = {}
    for g, w in zip(groups, group_w):
        for u in g:
            unit_w[u] = unit_w.get(u, 0.0) + w / len(g)
    units = sorted(unit_w)
    weights = parse_weights([unit_w[u] for u in units], len(units))
    if raw_weights is None and all(len(g) == 1 for g in groups):
        spec = "+".join(units)
    else:
        spec = " | ".join(f"{w:g}*({'+'.join(g)})" if raw_weights else "+".join(g) for g, w in zip(groups, group_w))
    return units, weights, spec


def header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """{tensor name: (shape, dtype)} from a safetensors header, without reading data."""
    with safe_open(str(path), framework="pt") as fh:
        return {k: (tuple(fh.get_slice(k).get_shape()), fh.get_slice(k).get_dtype()) for k in fh.keys()}


def check_compatible(pool: Pool, model_ids: list[str], full_hash: bool = False) -> list[dict]:
    """Members must share the seed and every tensor's name, shape and dtype; name the first mismatch."""
    metas = [pool.read_meta(m) for m in model_ids]
    ref = metas[0]
    ref_seed = ref["model_id"] if ref["kind"] == "seed" else ref["seed_id"]
    for meta in metas:
        check_weights_file(pool.weights_path(meta["model_id"]), meta, full_hash)
        seed = meta["model_id"] if meta["kind"] == "seed" else meta["seed_id"]
        if seed != ref_seed:
            raise UsageError(f"cannot merge {ref['model_id']} and {meta['model_id']}: different seeds "
                             f"({ref_seed} vs {seed})")
    ref_header = header(pool.weights_path(ref["model_id"]))
    for meta in metas[1:]:
        other = header(pool.weights_path(meta["model_id"]))
        for name in sorted(set(ref_header) | set(other)):
            if name not in other or name not in ref_header:
                raise UsageError(f"cannot merge {ref['model_id']} and {meta['model_id']}: tensor {name} "
                                 f"is in only one of them")
            if ref_header[name] != other[name]:
                raise UsageError(f"cannot merge {ref['model_id']} and {meta['model_id']}: tensor {name} is "
                                 f"{ref_header[name]} vs {other[name]} (shape, dtype)")
    return metas


def merge_id(model_ids: list[str], weights: list[float]) -> str:
    pairs = sorted(zip(model_ids, (round(w, 12) for w in weights)))
    return "merge-" + hashlib.sha256(repr(pairs).encode()).hexdigest()[:16]


def merge_members(pool: Pool, model_ids: list[str], weights: list[float] | None = None,
                  full_hash: bool = False) -> dict[str, torch.Tensor]:
    """The weighted average of members' weights, as a state dict in the members' dtypes."""
    weights = parse_weights(weights, len(model_ids))
    check_compatible(pool, model_ids, full_hash)
    out: dict[str, torch.Tensor] = {}
    with ExitStack() as stack:
        files = [stack.enter_context(safe_open(str(pool.weights_path(m)), framework="pt")) for m in model_ids]
        for name in files[0].keys():
            first = files[0].get_tensor(name)
            if not first.is_floating_point():
                out[name] = first  # integer buffers: copied, not averaged
                continue
            acc = first.to(torch.float32) * weights[0]
            for fh, w in zip(files[1:], weights[1:]):
                acc.add_(fh.get_tensor(name).to(torch.float32), alpha=w)
            out[name] = acc.to(first.dtype)
            if not torch.isfinite(out[name]).all():
                raise AblateError(f"merged tensor {name} has NaN/inf values (a member is corrupted?)")
    return out


class RunningSum:
    """Σ of member weights kept in float32, one add or remove per Gray-code step.

    Moving from one mixture to the next costs O(parameters) instead of
    O(k · parameters). Members are read key by key from safetensors.
    """

    def __init__(self, pool: Pool, model_ids: list[str]):
        self.pool = pool
        self.paths = {m: pool.weights_path(m) for m in model_ids}
        self.sum: dict[str, torch.Tensor] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.members: set[str] = set()

    def _apply(self, model_id: str, sign: float) -> None:
        with safe_open(str(self.paths[model_id]), framework="pt") as fh:
            for name in fh.keys():
                t = fh.get_tensor(name)
                if not t.is_floating_point():
                    self.sum.setdefault(name, t)
                    continue
                self.dtypes[name] = t.dtype
                if name not in self.sum:
                    self.sum[name] = torch.zeros(t.shape, dtype=torch.float32)
                self.sum[name].add_(t.to(torch.float32), alpha=sign)

    def add(self, model_id: str) -> None:
        if model_id in self.members:
            raise ValueError(f"{model_id} already in the sum")
        self._apply(model_id, 1.0)
        self.members.add(model_id)

    def remove(self, model_id: str) -> None:
        self._apply(model_id, -1.0)
        self.members.discard(model_id)

    def move_to(self, target: set[str]) -> int:
        """Add/remove members until the sum holds `target`; returns the number of updates."""
        changes = 0
        for m in sorted(self.members - target):
            self.remove(m)
            changes += 1
        for m in sorted(target - self.members):
            self.add(m)
            changes += 1
        return changes

    def average(self) -> dict[str, torch.Tensor]:
        k = len(self.members)
        if k == 0:
            raise ValueError("empty mixture")
        return {name: (t / k).to(self.dtypes[name]) if name in self.dtypes else t
                for name, t in self.sum.items()}


def gray_code_order(n: int) -> list[int]:
    """All 2^n - 1 non-empty subsets as bitmasks; consecutive ones differ in one member."""
    return [i ^ (i >> 1) for i in range(1, 1 << n)]


def export_mixture(pool: Pool, seed_id: str, model_ids: list[str], weights: list[float], out: Path,
                   meta: dict) -> Path:
    """Write the merged model as a normal HF directory (config, tokenizer, safetensors)."""
    import shutil

    from ablate.model import load_state, model_from_config, seed_config
    from ablate.pool import atomic_write_json

    state = merge_members(pool, model_ids, weights)
    model = model_from_config(seed_config(pool, seed_id))
    load_state(model, state, "merged weights")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not empty")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        seed_dir = pool.seed_dir(seed_id)
        for f in seed_dir.iterdir():
            if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "vocab.json", "merges.txt"):
                shutil.copy2(f, tmp / f.name)
        atomic_write_json(tmp / "ablate_mixture.json", meta)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
