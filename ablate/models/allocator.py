"""Keep freed memory for the next batch: glibc's malloc set up for torch's repeating CPU allocations.

How to run (from Python; threads.claim() does this at the start of every torch job):
    from ablate.models import allocator
    allocator.reuse_freed_memory()     # once per process; returns what it did, e.g. "glibc: heap kept"
    ABLATE_MALLOC=system ablate ...    # opt out: the C library's own behaviour

Why: on CPU torch takes every tensor from malloc. glibc serves a block over its mmap threshold (128 KB,
adapting up to 32 MB) with a fresh mmap and unmaps it on free, so every training step and evaluation
batch page-faults and zero-fills its large tensors again: SmolLM2-135M's logits are 400 MB per eval batch
of 8 x 255 tokens. Telling glibc never to mmap (M_MMAP_MAX = 0) and never to trim the heap's top lets the
next batch reuse the same pages. Measured at 135M on 2 cores, in fresh processes kept vs ABLATE_MALLOC=system:
evaluation calls 1.14x (bench/bench_eval.py, `make bench-135m`); a training step about 1.07x (one A/B of 6 steps,
not a bench row: bench/bench_train.py times ours against the Trainer, each started as it is in real life).

What it does not change: any value. The allocator decides where tensors live, not what is computed, so
scores and trained weights keep their bits (tests/models/test_allocator.py). The price: a process keeps
its peak heap until it exits (its RSS does not shrink after the largest batch). Off glibc (macOS), or with
jemalloc/tcmalloc preloaded (they cache freed memory themselves), it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
KEEP_HEAP = 2 ** 31 - 1  # an int: mallopt's argument; over 2 GB of free heap top is still given back
_state = {"done": None}


def reuse_freed_memory() -> str:
    """Tune glibc once per process (see the module doc); returns what was done, for logs and tests."""
    if _state["done"] is None:
        _state["done"] = _tune()
    return _state["done"]


def _tune() -> str:
    if os.environ.get("ABLATE_MALLOC", "").lower() == "system":
        return "system: ABLATE_MALLOC=system"
    preload = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in preload or "tcmalloc" in preload:
        return f"system: {os.path.basename(preload.split(':')[0])} preloaded"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "system: not glibc"
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEEP_HEAP) == 1
    except (OSError, AttributeError):
        return "system: mallopt unavailable"
    return "glibc: heap kept" if ok else "system: mallopt refused"
