"""Benchmark 8: memory of building a merged model on the study's device, at 135M parameters.

How to run:
    .venv/bin/python bench/bench_device.py [--quick] [--out FILE] [--ks 2,4,8] [--device cpu|cuda]
    git archive HEAD~1 ablate | tar -x -C /tmp/before      # an older version, to compare:
    .venv/bin/python bench/bench_device.py --before /tmp/before

Members are k random perturbations of one random Llama with SmolLM2-135M's shape (hidden 576,
30 layers, 9 heads / 3 KV heads, intermediate 1536, vocab 49152, tied: 134.5M parameters,
538 MB as float32), saved by ablate.models.model.save_weights with sidecars and the seed's config in
a minimal pool in a temp dir. Each (k, path) runs in a fresh subprocess, through ablate's code:
  score   ablate.scoring.inplace.merged_model (model_from_config, then merge_into: the members
          streamed into its parameters) on the device: what `score-mixture` / `export-mixture` build
  sweep   a sweep worker: its model, then RunningSum(device).move_to(k members) -> load_into
  before_score / before_sweep (with --before DIR): the same through the older package in DIR
          and its API (score-mixture kept the state dict; the worker loaded running.average())
Host: peak RSS (ru_maxrss) minus the RSS after imports, in model sizes (N x 4 bytes); bound <= 3.
Mapped member pages count in RSS, so this charges the streaming reads too. `held` is the RSS
left when the model is ready to evaluate (the evaluation's activations come on top). On CUDA
also torch.cuda.max_memory_allocated in model sizes; bound <= 2 (activations not included).
--quick: tiny sizes where interpreter overheads dominate, so the bound is not checked.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common

SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152)
QUICK = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=2, vocab_size=512)
HOWS = ("score", "sweep")


def build_pool(root: Path, n: int, arch: dict) -> dict:
    """A seed config and n perturbed members in root/pool; returns ids, parameter count, seconds."""
    import torch
    from transformers import LlamaConfig

    from ablate.models.model import model_from_config, save_weights, unique_state
    from ablate.store.pool import Pool, atomic_write_json

    t0 = time.perf_counter()
    pool = Pool(root / "pool")
    config = LlamaConfig(tie_word_embeddings=True, max_position_embeddings=2048, **arch)
    seed_dir = pool.seed_dir("seed-bench")
    seed_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(seed_dir))
    atomic_write_json(seed_dir / "meta.json", {"model_id": "seed-bench", "kind": "seed", "seed_id": "seed-bench"})
    base = unique_state(model_from_config(config))
    ids = []
    for i in range(n):
        gen = torch.Generator().manual_seed(i)
        state = {k: v + 1e-3 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        mid = f"unit-dev{i:02d}"
        folder = pool.member_dir(mid)
        folder.mkdir(parents=True, exist_ok=True)
        sha = save_weights(state, folder / "model.safetensors")
        atomic_write_json(folder / "meta.json", {"model_id": mid, "kind": "unit", "seed_id": "seed-bench",
                                                 "units": [f"dev{i:02d}"], "sha256": sha,
                                                 "size": (folder / "model.safetensors").stat().st_size})
        ids.append(mid)
        del state
    return {"ids": ids, "params": sum(v.numel() for v in base.values()), "build_s": time.perf_counter() - t0}


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(pool_root: str, k: int, how: str, device: str, before: str | None = None) -> None:
    """In a fresh process: RSS after imports (and a warm-up build of a tiny Llama, so transformers'
    model code is loaded before the baseline), then one build; print one JSON line.

    before_*: the same build through the ablate package in `before` (a `git archive` of an older
    commit), with that version's API: what score-mixture and a sweep worker did there."""
    if before:
        sys.path.insert(0, before)
    import torch
    from transformers import LlamaConfig

    import ablate
    from ablate.models.model import load_state, model_from_config, seed_config
    from ablate.scoring.merge import RunningSum, merge_members
    from ablate.store.pool import Pool

    assert Path(ablate.__file__).resolve().is_relative_to(Path(before or common.ROOT).resolve()), ablate.__file__
    on = {} if before else {"device": device}  # the older API has no device
    model_from_config(LlamaConfig(**QUICK), **on)  # imports, and CUDA's context when on a GPU
    pool = Pool(pool_root)
    ids = [f"unit-dev{i:02d}" for i in range(k)]
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base, base_rss = common.peak_rss_mb(), vm_rss_mb()
    t0 = time.perf_counter()
    kept = None
    if how == "score":  # score-mixture now: the merged model alone
        from ablate.scoring.inplace import merged_model

        model = merged_model(pool, "seed-bench", ids, full_hash=False, device=device)
    elif how == "before_score":  # score-mixture before: the state dict stayed beside the model
        kept = merge_members(pool, ids)
        model = model_from_config(seed_config(pool, "seed-bench"))
        load_state(model, kept, "merged weights")
    else:  # a sweep worker: its model first, then the running sum walks to the mixture and loads it
        model = model_from_config(seed_config(pool, "seed-bench"), **on)
        running = RunningSum(pool, ids, **on)
        running.move_to(set(ids))
        if before:
            load_state(model, running.average(), "running average")
        else:
            running.load_into(model)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out = {"k": k, "how": how, "device": device, "base_mb": base, "peak_mb": common.peak_rss_mb(),
           "held_mb": vm_rss_mb() - base_rss, "seconds": seconds}
    if cuda:
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print(json.dumps(out))


def main(argv=None) -> dict:
    p = common.base_parser(__doc__)
    p.add_argument("--ks", default=None, help="member counts, e.g. 2,4,8 (default 2,4,8; quick 2)")
    p.add_argument("--device", default="cpu", help="cpu (host memory) or cuda[:i] (also GPU memory)")
    p.add_argument("--before", help="an older ablate package's parent dir (git archive REV ablate | tar -x -C DIR): "
                                    "also measure that version's score and sweep builds")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    p.add_argument("--build", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2], args.child[3], args.child[4] or None)
        return {}
    if args.build:
        print(json.dumps(build_pool(Path(args.build[0]), int(args.build[1]), QUICK if args.build[2] == "1"
                                    else SMOLLM2_135M)))
        return {}
    ks = [int(x) for x in (args.ks or ("2" if args.quick else "2,4,8")).split(",")]
    hows = ("score",) if args.quick else HOWS + (("before_score", "before_sweep") if args.before else ())
    tmp = Path(tempfile.mkdtemp(prefix="ablate-bench-device-"))
    try:
        def sub(*argv):  # children are fresh interpreters: ru_maxrss is per process
            out = subprocess.run([common.python(), __file__, *argv], capture_output=True, text=True, check=True,
                                 timeout=900)
            return json.loads(out.stdout.strip().splitlines()[-1])

        built = sub("--build", str(tmp), str(max(ks)), "1" if args.quick else "0")
        before = str(Path(args.before).resolve()) if args.before else ""
        rows = [sub("--child", str(tmp / "pool"), str(k), how, args.device, before if how.startswith("before") else "")
                for k in ks for how in hows]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summarize(built, rows, args)


def summarize(built: dict, rows: list[dict], args) -> dict:
    model_mb = built["params"] * 4 / 2 ** 20
    for r in rows:
        r["model_sizes"] = (r["peak_mb"] - r["base_mb"]) / model_mb
        r["held_model_sizes"] = r["held_mb"] / model_mb
        if "gpu_peak_mb" in r:
            r["gpu_model_sizes"] = r["gpu_peak_mb"] / model_mb
    new = [r for r in rows if not r["how"].startswith("before")]
    gpu = [r["gpu_model_sizes"] for r in new if "gpu_model_sizes" in r]
    result = {
        "benchmark": "device", "device": args.device, "model_params": built["params"], "model_mb": model_mb,
        "build_s": built["build_s"], "rows": rows,
        "max_host_model_sizes": max(r["model_sizes"] for r in new), "host_bound": 3.0,
        "within_host_bound": None if args.quick else all(r["model_sizes"] <= 3 for r in new),
        "max_gpu_model_sizes": max(gpu) if gpu else None, "gpu_bound": 2.0,
        "within_gpu_bound": all(g <= 2 for g in gpu) if gpu else None,
        "gpu": "measured" if gpu else "not measured: no GPU in this run",
    }
    for r in rows:
        gpu_txt = f", GPU {r['gpu_model_sizes']:.2f}" if "gpu_model_sizes" in r else ""
        print(f"k={r['k']} {r['how']:>12} on {r['device']}: peak host RSS +{r['peak_mb'] - r['base_mb']:.0f} MiB = "
              f"{r['model_sizes']:.2f} model sizes (held {r['held_model_sizes']:.2f}){gpu_txt}", file=sys.stderr)
    met = {None: "not checked (quick sizes)", True: "met", False: "NOT met"}[result["within_host_bound"]]
    print(f"bound: host <= 3 model sizes: {met} "
          f"(max {result['max_host_model_sizes']:.2f}); GPU <= 2: {result['gpu']}", file=sys.stderr)
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
