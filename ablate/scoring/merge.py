"""Parameter averaging of pool members, streamed tensor by tensor.

How to run:
    ablate export-mixture fiction-00 bible-00 --out merged/       # a normal HF model dir
    ablate export-mixture fiction-00 bible-00 --weights 3,1 --out merged/

The average is accumulated in float32 and cast back to each tensor's dtype;
integer buffers are copied from the first member, not averaged. Weights are
normalized: uniform means every base unit counts once, so a domain with more
units weighs more (as in the paper). Members are read one at a time, key by key,
from memory-mapped safetensors files (mergekit's lazy loading), so memory holds the
accumulator plus one member's mapped file, never k models. On a GPU (`device`, see
ablate/models/device.py) the float32 sums live there and members go over in 16 MB chunks, so
the sums and the model they are loaded into are the only two copies on the device.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

import torch
from safetensors import safe_open

from ablate.core.errors import AblateError, UsageError
from ablate.core.weights import parse_weights
from ablate.models.device import axpy_chunked
from ablate.models.model import check_fit, check_weights_file
from ablate.store.pool import Pool, check_name, seed_of


def parse_mixture(items: list[str], raw_weights: str | list[float] | None = None) -> tuple[list[str], list[float], str]:
    """Command-line mixture → (sorted units, their normalized weights, a readable spec).

    Each item is a unit or a macro group `a+b+c` (a merge of merges, as the paper's
    macro merges): a group is averaged first, then groups are averaged with the
    given weights, which is the same as unit weights w_group / |group|.
    """
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
    ref_seed = seed_of(ref)
    for meta in metas:
        check_weights_file(pool.weights_path(meta["model_id"]), meta, full_hash)
        seed = seed_of(meta)
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
                  full_hash: bool = False, device=None) -> dict[str, torch.Tensor]:
    """The weighted average of members' weights, as a state dict in the members' dtypes, on `device`
    (default CPU; on another device the sums live there and members stream in: merge_on)."""
    weights = parse_weights(weights, len(model_ids))
    check_compatible(pool, model_ids, full_hash)
    paths = [pool.weights_path(m) for m in model_ids]
    if device is not None and torch.device(device).type != "cpu":
        return merge_on(torch.device(device), paths, weights)
    # One member at a time, its file unmapped before the next is read: mapped pages count in
    # our RSS, so holding all k files open (key by key, as before) cost k model sizes; now
    # the peak is the accumulator plus one member (bench/bench_memory.py). Per element the
    # float ops are the same ones in the same member order, so the result is bit-identical.
    blocks = [f32_block(p) for p in paths]
    if all(b is not None and b[2] == blocks[0][2] for b in blocks):
        return _merge_flat(paths, blocks[0][2], weights)
    return merge_on(torch.device("cpu"), paths, weights)


def merge_on(device: torch.device, paths: list[Path], weights: list[float]) -> dict[str, torch.Tensor]:
    """The weighted average with float32 sums on `device`, members streamed tensor by tensor from
    their host mappings: the sums (one model) plus one chunk on the device, one member's mapped
    pages on the host. Integer buffers are copied from the first member, not averaged."""
    acc: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for i, (path, w) in enumerate(zip(paths, weights)):
        for name, t in read_member(path):
            if i == 0:
                dtypes[name] = t.dtype
                if not t.is_floating_point():
                    acc[name] = t.to(device, copy=True)
                    continue
                acc[name] = torch.empty(t.shape, dtype=torch.float32, device=device)
            if dtypes[name].is_floating_point:
                axpy_chunked(acc[name], t, w, first=i == 0)
    out: dict[str, torch.Tensor] = {}
    for name in list(acc):  # pop as we cast, so a bf16 model never holds two full copies
        t = acc.pop(name)
        if not dtypes[name].is_floating_point:
            out[name] = t
            continue
        out[name] = t.to(dtypes[name])  # float32 (every ablate member): the same tensor
        if not all_finite(out[name]):
            raise AblateError(f"merged tensor {name} has NaN/inf values (a member is corrupted?)")
    return out


def _merge_flat(paths: list[Path], header: dict, weights: list[float]) -> dict[str, torch.Tensor]:
    """merge_members for members that are each one float32 block with the same layout.

    One multiply-add per member over the whole block instead of one per tensor: at 20M
    parameters on a busy 2-core VM, 29 small parallel ops per member cost 10x the one big
    op. The result is cloned per tensor so callers get independent tensors, as before."""
    acc = None
    for path, w in zip(paths, weights):
        block = f32_block(path)
        data = map_f32(path, block[0], block[1])
        if acc is None:
            acc = data * w
        else:
            acc.add_(data, alpha=w)
        del data  # unmap before the next member
    views = {}
    for name in sorted(header):
        begin, end = header[name]["data_offsets"]
        views[name] = acc[begin // 4:end // 4].view(header[name]["shape"])
    if not all_finite(acc):
        bad = next(n for n, v in views.items() if not all_finite(v))
        raise AblateError(f"merged tensor {bad} has NaN/inf values (a member is corrupted?)")
    return {name: v.clone() for name, v in views.items()}


def all_finite(t: torch.Tensor) -> bool:
    """Same answer as isfinite(t).all(): min and max propagate NaN and show ±inf.

    One reduction instead of a full bool tensor plus a second pass: ~10x faster on CPU,
    where the NaN check was a third of a demo-model merge."""
    if t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


class RunningSum:
    """Σ of member weights kept in float32, one add or remove per Gray-code step.

    Moving from one mixture to the next costs O(parameters) instead of
    O(k · parameters). When a member's file is one block of float32 tensors (every
    ablate member is), the sum is one flat buffer laid out like the file's data and a
    step adds the block in 16 MB chunks read into one reused buffer: one kernel per chunk
    (one for a demo model) instead of one per tensor, which matters for tiny models and on
    shared CPUs, where each parallel op waits for every thread to wake, and memory holds
    the sum, the model it is loaded into and one chunk (≤ 3 model sizes, bench_device.py).
    Per element the arithmetic is the same either way, so both paths give bit-identical
    sums. Other files are read key by key. On another `device` the sum lives there.
    """

    def __init__(self, pool: Pool, model_ids: list[str], device=None):
        self.pool = pool
        self.device = torch.device(device or "cpu")
        self.paths = {m: pool.weights_path(m) for m in model_ids}
        self.sum: dict[str, torch.Tensor] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        self.members: set[str] = set()
        self.flat: torch.Tensor | None = None  # backs every self.sum entry when set
        self.layout: dict | None = None  # the header entries that flat mirrors

    def _apply(self, model_id: str, sign: float) -> None:
        path = self.paths[model_id]
        block = f32_block(path)
        if block is not None and self.flat is None and not self.sum:  # first member: lay out the buffer
            self.layout = block[2]
            self.flat = torch.zeros(block[1] // 4, dtype=torch.float32, device=self.device)
            for name in sorted(self.layout):
                begin, end = self.layout[name]["data_offsets"]
                self.sum[name] = self.flat[begin // 4:end // 4].view(self.layout[name]["shape"])
                self.dtypes[name] = torch.float32
        if block is not None and block[2] == self.layout:
            # read in chunks into one reused buffer: mapping the whole file would put one more model
            # in our RSS beside the sum and the worker's model (3 in all; bench/bench_device.py)
            for a, piece in read_f32_chunks(path, block[0], block[1] // 4):
                self.flat[a:a + piece.numel()].add_(piece.to(self.device), alpha=sign)
            return
        for name, t in read_member(path):
            if not t.is_floating_point():
                self.sum.setdefault(name, t.to(self.device, copy=True))
                continue
            self.dtypes[name] = t.dtype
            if name not in self.sum:
                self.sum[name] = torch.zeros(t.shape, dtype=torch.float32, device=self.device)
            self._add(self.sum[name], t, sign)

    def _add(self, dst: torch.Tensor, src: torch.Tensor, sign: float) -> None:
        if self.device.type == "cpu":
            dst.add_(src.to(torch.float32), alpha=sign)
        else:  # a device: the host mapping goes over in chunks, never a whole member at once
            axpy_chunked(dst, src, sign, first=False)

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
        """The mean as a fresh state dict (to load into a model; the sum is not shared).

        On the flat path the tensors are views of one new buffer (one division, not one per
        tensor), so pass them to load_state_dict rather than to safetensors' save_file."""
        k = len(self.members)
        if k == 0:
            raise ValueError("empty mixture")
        # (every entry float32 and in the flat buffer: no integer buffers kept on the side)
        if self.flat is not None and len(self.dtypes) == len(self.sum) and \
                all(d == torch.float32 for d in self.dtypes.values()):
            mean = self.flat / k
            return {name: mean[t.storage_offset() - self.flat.storage_offset():][:t.numel()].view(t.shape)
                    for name, t in self.sum.items()}
        return {name: (t / k).to(self.dtypes[name]) if name in self.dtypes else t
                for name, t in self.sum.items()}

    def load_into(self, model, where: str = "running average") -> None:
        """Put the mean into the model's weights, tensor by tensor in place: copy, then divide, the
        same rounding as average() (bit-identical), without its full-size temporary, so the sum and
        the model are the only two copies, on the host as on a GPU."""
        k = len(self.members)
        if k == 0:
            raise ValueError("empty mixture")
        params = check_fit(model, set(self.sum), where)
        with torch.no_grad():
            for name, t in self.sum.items():
                dtype = self.dtypes.get(name)
                if dtype == torch.float32:
                    params[name].copy_(t).div_(k)
                else:  # integer buffers as they are; other float dtypes rounded as average() does
                    params[name].copy_(t if dtype is None else (t / k).to(dtype))


def f32_block(path: Path) -> tuple[int, int, dict] | None:
    """(data start, data bytes, header) if a safetensors file's data is exactly its float32
    tensors back to back from offset 0 (then it can be read as one flat tensor); else None."""
    if sys.byteorder != "little":  # safetensors stores little-endian
        return None
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > min(size - 8, 100_000_000):
                return None
            header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        spans = sorted((v["data_offsets"][0], v["data_offsets"][1], v["dtype"]) for v in header.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error):
        return None  # the key-by-key path reads it, and reports a broken file as before
    start, pos = 8 + n, 0
    for begin, end, dtype in spans:
        if dtype != "F32" or begin != pos:
            return None
        pos = end
    if not spans or start % 4 or start + pos != size:
        return None
    return start, pos, header


def read_f32_chunks(path: Path, start: int, n: int):
    """(offset, float32 piece) over a file's data block of n floats, read into one reused buffer of
    device.CHUNK floats: memory holds one chunk of the member, whatever its size. Callers use a
    piece before asking for the next."""
    from ablate.models.device import CHUNK  # read per call, not at import: tests shrink device.CHUNK

    buf = torch.empty(min(CHUNK, n), dtype=torch.float32)
    raw = memoryview(buf.numpy()).cast("B")
    with open(path, "rb", buffering=0) as fh:
        fh.seek(start)
        for a in range(0, n, CHUNK):
            m, got = min(CHUNK, n - a), 0
            while got < m * 4:  # a read may return less than asked
                step = fh.readinto(raw[got:m * 4])
                if not step:
                    raise AblateError(f"weights {path} ended early (truncated while being read?)")
                got += step
            yield a, buf[:m]


def map_f32(path: Path, start: int, nbytes: int) -> torch.Tensor:
    """The file's data block as one flat float32 tensor over a private read-only mapping.

    No copy is made; the pages are unmapped when the last view of the tensor goes."""
    data = torch.from_file(str(path), shared=False, size=start + nbytes, dtype=torch.uint8)
    return data[start:].view(torch.float32)


def read_member(path: Path):
    """Yield (name, tensor) in name order (safetensors' key order).

    A plain float32 file (every ablate member) is mapped once and its tensors are views of
    the mapping: no per-tensor copies, whose freed buffers the allocator keeps (a whole
    model's worth of RSS at 20M parameters). Callers must not keep the views. Any other
    file is read by safetensors, which also reports a broken file as before."""
    block = f32_block(path)
    if block is None:
        with safe_open(str(path), framework="pt") as fh:
            for name in fh.keys():
                yield name, fh.get_tensor(name)
        return
    start, nbytes, header = block
    data = map_f32(path, start, nbytes)
    for name in sorted(header):
        begin, end = header[name]["data_offsets"]
        yield name, data[begin // 4:end // 4].view(header[name]["shape"])


def flat_member(path: Path) -> tuple[torch.Tensor, tuple]:
    """A member as one flat float32 vector and its spans [(begin, end, name)] in file order."""
    block = f32_block(path)
    if block is not None:  # every ablate member: a mapped view, no copy
        start, nbytes, header = block
        spans = tuple(sorted((v["data_offsets"][0] // 4, v["data_offsets"][1] // 4, k) for k, v in header.items()))
        return map_f32(path, start, nbytes), spans
    parts, spans, at = [], [], 0  # other files (bf16, ...): read and widened once
    for name, tensor in read_member(path):
        if not tensor.is_floating_point():
            continue
        parts.append(tensor.float().reshape(-1))
        spans.append((at, at + tensor.numel(), name))
        at += tensor.numel()
    return torch.cat(parts), tuple(spans)


def gray_code_order(n: int) -> list[int]:
    """All 2^n - 1 non-empty subsets as bitmasks; consecutive ones differ in one member."""
    return [i ^ (i >> 1) for i in range(1, 1 << n)]
