"""Benchmark 5: peak memory of merging k = 2, 4, 8, 16 members of a ~20M-parameter model.

How to run:
    .venv/bin/python bench/bench_memory.py [--quick] [--out FILE]

Members are random-init Llama weights (hidden 512, 6 layers, vocab 4096: 21M parameters,
84 MB as float32) saved with ablate.models.model.save_weights into a minimal pool in a temp dir.
Each k runs `merge_members` in a fresh subprocess and reports its peak RSS
(resource.getrusage ru_maxrss) minus the RSS the same process had after its imports
(that constant is reported too; /proc VmHWM gives the same delta, as a cross-check).
Target: flat in k, at most 3 model sizes above the constant.
The same children time the merge, so this also gives the merge bandwidth at 20M
(bytes of member weights read per second) against a measured memory copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import common

FULL = dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8, vocab_size=4096)
QUICK = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, vocab_size=512)


def build_pool(root: Path, n: int, arch: dict) -> tuple[list[str], int]:
    """n random members in root/pool; returns (member ids, bytes per member file)."""
    import torch
    from transformers import LlamaConfig

    from ablate.models.model import model_from_config, save_weights, unique_state
    from ablate.store.pool import Pool, atomic_write_json

    pool = Pool(root / "pool")
    config = LlamaConfig(num_key_value_heads=arch["num_attention_heads"], tie_word_embeddings=True,
                         max_position_embeddings=128, **arch)
    shapes = {k: v.shape for k, v in unique_state(model_from_config(config)).items()}
    ids = []
    for i in range(n):
        mid = f"unit-mem{i:02d}"
        folder = pool.member_dir(mid)
        folder.mkdir(parents=True, exist_ok=True)
        gen = torch.Generator().manual_seed(i)
        state = {k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}
        sha = save_weights(state, folder / "model.safetensors")
        size = (folder / "model.safetensors").stat().st_size
        atomic_write_json(folder / "meta.json", {"model_id": mid, "kind": "unit", "seed_id": "seed-mem",
                                                 "units": [f"mem{i:02d}"], "sha256": sha, "size": size})
        ids.append(mid)
    return ids, size


def vm_hwm_mb() -> float:
    """The kernel's high-water RSS of this address space (reset by exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(pool_root: str, k: int, how: str) -> None:
    """In a fresh process: RSS after imports, then merge k members; print one JSON line.

    ru_maxrss survives exec (a child forked from a big parent starts at the parent's size),
    so main() keeps its own process small: no torch there until every child has run."""
    import torch  # noqa: F401  (counted in the baseline, as in a real run)

    from ablate.scoring.merge import RunningSum, merge_members
    from ablate.store.pool import Pool

    pool = Pool(pool_root)
    ids = [f"unit-mem{i:02d}" for i in range(k)]
    base, base_hwm = common.peak_rss_mb(), vm_hwm_mb()
    state = None
    t0 = time.perf_counter()
    if k and how == "merge_members":
        state = merge_members(pool, ids)
    elif k:
        running = RunningSum(pool, ids)
        running.move_to(set(ids))
        state = running.average()
    seconds = time.perf_counter() - t0
    assert k == 0 or len(state) > 0
    peak, hwm = common.peak_rss_mb(), vm_hwm_mb() - base_hwm
    warm = []  # the first merge pays first-touch page faults on fresh buffers; later ones reuse them
    for _ in range(3 if k and how == "merge_members" else 0):
        state = None
        warm.append(common.timed(merge_members, pool, ids)[0])
    print(json.dumps({"k": k, "how": how, "base_mb": base, "peak_mb": peak, "seconds": seconds,
                      "warm_seconds": common.median(warm) if warm else None, "hwm_delta_mb": hwm}))


def main(argv=None) -> dict:
    p = common.base_parser(__doc__)
    p.add_argument("--child", nargs=3, metavar=("POOL", "K", "HOW"), help=argparse_hidden())
    p.add_argument("--build", nargs=3, metavar=("ROOT", "N", "QUICK"), help=argparse_hidden())
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return {}
    if args.build:
        ids, size = build_pool(Path(args.build[0]), int(args.build[1]), QUICK if args.build[2] == "1" else FULL)
        print(json.dumps({"ids": ids, "size": size}))
        return {}
    ks = (2,) if args.quick else (2, 4, 8, 16)  # quick: each child is a fresh interpreter (~3 s of imports)
    tmp = Path(tempfile.mkdtemp(prefix="ablate-bench-mem-"))
    try:
        def sub(*argv):
            out = subprocess.run([common.python(), __file__, *argv], capture_output=True, text=True, check=True,
                                 timeout=600)
            return json.loads(out.stdout.strip().splitlines()[-1])

        t0 = time.perf_counter()
        model_bytes = sub("--build", str(tmp), str(max(ks)), "1" if args.quick else "0")["size"]
        build_s = time.perf_counter() - t0

        def run(k, how="merge_members"):
            return sub("--child", str(tmp / "pool"), str(k), how)

        # every child records its own after-imports RSS (the constant), so no k = 0 run is needed
        rows = [run(k) for k in ks] + ([] if args.quick else [run(max(ks), "running_sum")])
        copy_bw = common.copy_bandwidth()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model_mb = model_bytes / 2 ** 20
    for r in rows:
        r["delta_mb"] = r["peak_mb"] - r["base_mb"]
        r["model_sizes"] = r["delta_mb"] / model_mb
        r["gb_s"] = r["k"] * model_bytes / r["seconds"] / 1e9 if r["k"] else None
        r["warm_gb_s"] = r["k"] * model_bytes / r["warm_seconds"] / 1e9 if r.get("warm_seconds") else None
    merges = [r for r in rows if r["how"] == "merge_members"]
    result = {
        "benchmark": "memory", "model_params": model_bytes // 4, "model_mb": model_mb, "build_s": build_s,
        "rows": rows, "max_model_sizes": max(r["model_sizes"] for r in merges),
        # flat: the spread over k stays under half a model (one k in quick mode: trivially flat)
        "flat": max(r["delta_mb"] for r in merges) - min(r["delta_mb"] for r in merges) < 0.5 * model_mb,
        "within_3_models": all(r["model_sizes"] <= 3 for r in merges),
        "merge_gb_s_median": common.median([r["gb_s"] for r in merges]),
        "merge_warm_gb_s_median": common.median([r["warm_gb_s"] for r in merges]), "copy_bandwidth_gb_s": copy_bw / 1e9,
    }
    common.emit(result, args.out)
    return result


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
