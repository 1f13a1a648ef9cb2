"""Freed memory kept for the next batch (ablate/models/allocator.py): pages reused, values unchanged, opt-out.

Each case runs in a fresh interpreter: mallopt is process-wide and cannot be undone, so the pytest process
itself must not be the one measured."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc only: elsewhere the allocator is left alone")

PROBE = r"""
import json, resource, sys
import torch
from ablate.models import threads
threads.claim(1)  # a torch job starts as every ablate command starts one
from ablate.models import allocator

def faults_of_a_batch():  # what one batch of a loop does: activations written, combined, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = torch.empty(16 << 20)
    a.fill_(1.0)
    b = torch.empty(4 << 20)
    b.fill_(2.0)
    c = a[: 4 << 20] + b
    del a, b, c
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

torch.manual_seed(0)
layer = torch.nn.Linear(64, 64)
out = layer(torch.randn(8, 64)).detach()
for _ in range(3):  # the first batches grow the heap to the loop's size
    faults_of_a_batch()
print(json.dumps({"mode": allocator.reuse_freed_memory(), "faults": [faults_of_a_batch() for _ in range(5)],
                  "bits": out.numpy().tobytes().hex()}))
"""


def _probe(tmp_path, **env) -> dict:
    run_env = {**os.environ, "ABLATE_JOBS_DIR": str(tmp_path), **env}
    run_env.pop("LD_PRELOAD", None)
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=run_env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_torch_job_reuses_its_freed_pages_with_the_same_values(tmp_path):
    kept = _probe(tmp_path)
    system = _probe(tmp_path, ABLATE_MALLOC="system")
    assert kept["mode"] == "glibc: heap kept"
    assert system["mode"].startswith("system")
    pages = (64 + 16 + 16 << 20) // 4096  # one batch's pages
    # glibc's default maps each block over its threshold afresh: most pages fault again every batch;
    # kept, the heap has grown to the loop's size in the first batches and later ones fault a few pages.
    # The median batch: the kernel may fault a kept heap's pages once in a while on its own (NUMA balancing
    # unmaps pages to see who touches them; CI saw one batch in five runs refault 64 MB), not every batch.
    assert statistics.median(system["faults"]) > pages // 2
    assert statistics.median(kept["faults"]) < pages // 10
    assert kept["bits"] == system["bits"]  # where tensors live, not what is computed


def test_jemalloc_or_tcmalloc_preloaded_are_left_alone(monkeypatch):
    from ablate.models import allocator

    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    monkeypatch.delenv("ABLATE_MALLOC", raising=False)
    assert allocator._tune() == "system: libjemalloc.so.2 preloaded"
