"""Where models are trained, merged and evaluated: the study's `device` key, resolved in one place.

How to set it (any command):
    ablate sweep --set device=cpu            # auto (default): cuda if a GPU is visible, else cpu
    ablate score-mixture a b --set device=cuda:1 --set eval.precision=fp32

`auto` and `cuda` give one process the first GPU; sweep workers get one GPU each
(worker i -> cuda:(i % GPUs), `worker_devices`), `cuda:N` pins every stage and worker to
GPU N. Evaluation on CUDA runs under bf16 autocast or in plain fp32 (TF32 off), as
`eval.precision` says; on the CPU it is always fp32. Each `mixture_perplexity` row
records both (`device`, `eval_precision`).
"""

from __future__ import annotations

import re
from contextlib import nullcontext

import torch

from ablate.core.config import DEVICE_SPEC
from ablate.core.errors import UsageError


def check_spec(spec: str) -> str:
    """auto, cpu, cuda or cuda:N (N a GPU index), as the config accepts; UsageError otherwise."""
    if not isinstance(spec, str) or not re.fullmatch(DEVICE_SPEC, spec):
        raise UsageError(f"{spec!r} is not a device: use auto, cpu, cuda or cuda:N (N a GPU index)")
    return spec


def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_devices(n_workers: int, n_gpus: int, spec: str = "auto") -> list[str]:
    """The device of each of n workers on a host with n_gpus GPUs (a pure function).

    auto: worker i gets cuda:(i % n_gpus), or cpu without a GPU; cuda: the same but a GPU is
    required; cuda:N: every worker on GPU N; cpu: every worker on the CPU."""
    check_spec(spec)
    if spec == "cpu" or (spec == "auto" and n_gpus == 0):
        return ["cpu"] * n_workers
    if n_gpus == 0:
        build = " (this torch is a CPU-only build)" if torch.version.cuda is None else ""
        raise UsageError(f"device={spec}: no CUDA GPU is visible{build}; use device=cpu or device=auto")
    if ":" in spec:
        index = int(spec.split(":")[1])
        if index >= n_gpus:
            raise UsageError(f"device={spec}: only {n_gpus} GPU(s) visible (cuda:0 to cuda:{n_gpus - 1})")
        return [spec] * n_workers
    return [f"cuda:{i % n_gpus}" for i in range(n_workers)]


def resolve_device(spec) -> torch.device:
    """One process's device from a config (or its `device` string); UsageError if it cannot be had."""
    spec = getattr(spec, "device", spec)
    return torch.device(worker_devices(1, gpu_count(), spec)[0])


def eval_precision(device: torch.device, precision: str | None) -> str:
    """What evaluation on `device` runs in: the asked precision on CUDA (default bf16), fp32 elsewhere."""
    if torch.device(device).type != "cuda":
        return "fp32"
    return precision or "bf16"


class _ExactFp32:
    """fp32 matmuls without TF32 inside the block (training may have turned TF32 on).

    A class, not a generator: the evaluator enters the same context once per batch."""

    def __enter__(self):
        self.saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def precision_context(device: torch.device, precision: str):
    """The context a forward pass runs in: bf16 autocast, exact fp32 on CUDA, or nothing (CPU)."""
    if torch.device(device).type != "cuda":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return _ExactFp32()


def describe(cfg) -> str:
    """One line for logs: the resolved device and the evaluation precision."""
    device = resolve_device(cfg)
    return f"device {device} (evaluation in {eval_precision(device, cfg.eval.precision)})"


# Elements per read / host-to-device copy: 16 MB of float32, so neither the host nor a device ever
# holds a whole member beside the model and the sums (3% of a 135M model).
CHUNK = 1 << 22


def axpy_chunked(dst: torch.Tensor, src: torch.Tensor, alpha: float, first: bool) -> None:
    """dst = alpha * src (first) or dst += alpha * src in float32, src on the host, sent in CHUNK pieces."""
    d, s = dst.view(-1), src.reshape(-1)
    for a in range(0, s.numel(), CHUNK):
        piece = s[a:a + CHUNK].to(dst.device, torch.float32)
        if first:
            torch.mul(piece, alpha, out=d[a:a + CHUNK])
        else:
            d[a:a + CHUNK].add_(piece, alpha=alpha)


def leased(slots, fn, *args, **kwargs):
    """Run fn(*args, device=D, **kwargs) holding device D taken from a shared queue of free slots.

    Sweep workers run one task at a time and the queue holds one slot per worker, so while
    tasks run each worker holds its own slot: with as many workers as GPUs, a GPU each."""
    device = slots.get()
    try:
        return fn(*args, device=device, **kwargs)
    finally:
        slots.put(device)
