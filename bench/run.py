"""Run every benchmark and write docs/results/bench/results.json and RESULTS.md.

How to run:
    make bench                                   # = .venv/bin/python bench/run.py
    .venv/bin/python bench/run.py --quick        # tiny sizes, about a minute (smoke test)
    .venv/bin/python bench/run.py --compile      # time torch.compile even if the budget is tight
    .venv/bin/python bench/run.py --only train,eval
    .venv/bin/python bench/run.py --size 135m    # train, eval, merge at SmolLM2-135M (make bench-135m, ~13 min)
    python3 bench/gpu_135m.py --out DIR          # the 135M rows on a GPU, bf16 MFU (torch + transformers only)

One bench study (the demo architecture on the Debian corpus, eight units) is built in a
temp dir with the library API and shared by the benchmarks; each benchmark runs in its own
process (fresh memory, and a crash or time-out costs one row, not the run). Every number
is a ratio against a reference measured in the same run, interleaved, medians: the machine
is shared and its speed varies several-fold from minute to minute. A time budget
(--budget, default 14 min) caps the repeated rounds, and shrinks when a step runs late.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "docs" / "results" / "bench"  # generated results live with the other results
sys.path.insert(0, str(HERE))

import common  # noqa: E402

# name, script, share of the remaining budget for its repeated rounds, hard time-out (s)
# (the sweep and scaling budgets decide whether to run or estimate their largest piece)
BENCHES = [
    ("train", "bench_train.py", 0.10, 240),
    ("eval", "bench_eval.py", 0.10, 240),
    ("mixture", "bench_mixture.py", 0.07, 180),
    ("memory", "bench_memory.py", None, 240),
    ("device", "bench_device.py", None, 600),
    ("sweep", "bench_sweep.py", 0.45, 420),
    ("scaling", "bench_scaling.py", 0.6, 300),
    ("throughput", "bench_throughput.py", 0.5, 600),
    ("screen", "bench_screen.py", None, 1800),  # builds the 255-mixture per-window tables once (cached)
    ("optimize", "bench_optimize.py", None, 600),
    ("ensemble", "bench_ensemble.py", None, 300),
    ("tasks", "bench_tasks.py", 0.05, 240),
]
# `--size 135m`: the speed benchmarks again where GEMMs, not overheads, dominate (SmolLM2-135M, a real seed).
# Not in the default run (~13 min more); stored beside the demo-size results under "at_135m".
BENCHES_135M = [
    ("train", "bench_train.py", None, 900),
    ("eval", "bench_eval.py", None, 900),
    ("mixture", "bench_mixture.py", None, 900),  # scoring a merged model end to end vs disk + the user's loop
    ("device", "bench_device.py", None, 900),  # merged-model build time and peak RSS (135M shape already)
]


def contention_probe() -> dict:
    """How slow a 2-thread parallel op is right now vs 1 thread (the machine's mood).

    On this VM a busy neighbour can make every parallel op wait milliseconds for the
    second vCPU; this number says how much of that the run saw."""
    code = ("import torch,time,statistics,json\nt=torch.randn(1<<22)\nout={}\n"
            "for th in (1,2):\n torch.set_num_threads(th);ts=[]\n for _ in range(30):\n"
            "  a=time.perf_counter();t.add_(t,alpha=0.0);ts.append(time.perf_counter()-a)\n"
            " out[th]=statistics.median(ts)*1e3\nprint(json.dumps(out))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    ms = json.loads(out.stdout)
    return {"add_4M_ms_1_thread": ms["1"], "add_4M_ms_2_threads": ms["2"], "slowdown_2_vs_1": ms["2"] / ms["1"]}


def run_one(name: str, script: str, study: Path, quick: bool, budget: float | None, timeout: float,
            extra: list[str]) -> dict:
    out = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".json")[1])
    cmd = [sys.executable, str(HERE / script), "--study", str(study), "--out", str(out), *extra]
    if quick:
        cmd.append("--quick")
    if budget is not None:
        cmd += ["--budget", f"{budget:.0f}"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}", "wall_s": wall}
        result = json.loads(out.read_text())
        result["wall_s"] = wall
        return result
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "wall_s": time.perf_counter() - t0}
    finally:
        out.unlink(missing_ok=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test); results go to a temp dir")
    p.add_argument("--compile", action="store_true", help="measure torch.compile even when short of time")
    p.add_argument("--budget", type=float, default=840.0, help="seconds for the whole run (default 14 min)")
    p.add_argument("--only", help="comma-separated subset: " + ",".join(b[0] for b in BENCHES))
    p.add_argument("--out-dir", default=None, help="where results.json and RESULTS.md go (default docs/results/bench/)")
    p.add_argument("--size", choices=common.SIZES, default="demo",
                   help="135m: train/eval/merge at SmolLM2-135M, kept beside the demo-size results")
    args = p.parse_args(argv)
    out_dir = Path(args.out_dir) if args.out_dir else (Path(tempfile.mkdtemp()) if args.quick else RESULTS)
    previous = json.loads((out_dir / "results.json").read_text()) if (out_dir / "results.json").exists() else {}
    if args.size != "demo":
        return run_135m(args, out_dir, previous)
    only = set(args.only.split(",")) if args.only else None
    t_start = time.perf_counter()
    deadline = t_start + args.budget
    work = Path(tempfile.mkdtemp(prefix="ablate-bench-"))
    results: dict = {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "quick": args.quick, "machine": machine(), "benchmarks": {}}
    try:
        results["probe_start"] = contention_probe()
        t0 = time.perf_counter()
        common.build_study(work / "study", args.quick, log=lambda *a: None)
        results["study_build_s"] = time.perf_counter() - t0
        print(f"study built in {results['study_build_s']:.0f} s", flush=True)
        for name, script, share, timeout in BENCHES:
            if only and name not in only:
                continue
            left = deadline - time.perf_counter()
            budget = max(10.0, share * left) if share else None
            res = run_one(name, script, work / "study", args.quick, budget, max(60.0, min(timeout, left)), [])
            results["benchmarks"][name] = res
            print(f"{name}: {summary_line(name, res)}  [{res['wall_s']:.0f} s]", flush=True)
        left = deadline - time.perf_counter()
        trained = "error" not in results["benchmarks"].get("train", {"error": "not run"})
        if not args.quick and trained and (args.compile or left > 300):
            # torch.compile is measured last, only with time to spare: a cold compile is ~1 min quiet
            res = run_one("compile", "bench_train.py", work / "study", False, None, max(60.0, min(300.0, left - 30)),
                          ["--compile-only"])
            results["benchmarks"]["train"]["compile"] = res.get("compile") or {"error": res.get("error")}
            print(f"compile: {res.get('compile') or res.get('error')}  [{res['wall_s']:.0f} s]", flush=True)
        results["probe_end"] = contention_probe()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_s"] = time.perf_counter() - t_start
    if "at_135m" in previous:  # measured by `--size 135m`, not by this run: kept, with its own date
        results["at_135m"] = previous["at_135m"]
    return write_results(results, out_dir, results["total_s"])


def run_135m(args, out_dir: Path, previous: dict) -> int:
    """The 135M benchmarks into results["at_135m"]; the demo-size results already there are kept."""
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ablate-bench-135m-"))
    part: dict = {"started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
                  "quick": args.quick, "benchmarks": {}}
    try:
        part["probe_start"] = contention_probe()
        t0 = time.perf_counter()
        common.build_study(work / "study", args.quick, log=lambda *a: None, size=args.size)
        part["study_build_s"] = time.perf_counter() - t0
        print(f"135M study built in {part['study_build_s']:.0f} s", flush=True)
        for name, script, _, timeout in BENCHES_135M:
            extra = ["--ks", "2,4"] if name == "device" else ["--size", args.size]
            if name == "eval" and not args.quick:
                extra.append("--compile")  # torch.compile's break-even in batches: ~2 min more
            res = run_one(name, script, work / "study", args.quick, None, timeout, extra)
            part["benchmarks"][name] = res
            print(f"{name} (135M): {summary_line(name, res)}  [{res['wall_s']:.0f} s]", flush=True)
        part["probe_end"] = contention_probe()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    part["total_s"] = time.perf_counter() - t_start
    results = previous or {"started_at": part["started_at"], "quick": args.quick, "machine": part["machine"],
                           "benchmarks": {}, "total_s": 0.0}
    results["at_135m"] = part
    write_results(results, out_dir, part["total_s"])
    return 1 if any("error" in r for r in part["benchmarks"].values()) else 0


def write_results(results: dict, out_dir: Path, seconds: float) -> int:
    """results.json, and RESULTS.md rendered from it with the hand-written sections after the generated part kept."""
    from render import END_OF_GENERATED, render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    gpu = out_dir / "gpu_135m.json"  # measured on a GPU machine by bench/gpu_135m.py, kept beside the CPU rows
    if gpu.exists():
        results["gpu_135m"] = json.loads(gpu.read_text())
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
    md = out_dir / "RESULTS.md"
    by_hand = md.read_text().partition(END_OF_GENERATED)[2] if md.exists() else ""
    md.write_text(render_markdown(results).rstrip("\n") + by_hand if by_hand.strip() else render_markdown(results))
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'RESULTS.md'} in {seconds:.0f} s")
    return 1 if any("error" in r for r in results["benchmarks"].values()) else 0


def machine() -> dict:
    import os

    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
            "gpu": "none lent to this task (benchmark 7 skipped)" if not torch.cuda.is_available()
            else torch.cuda.get_device_name(0)}


def summary_line(name: str, r: dict) -> str:
    if "error" in r:
        return "ERROR " + r["error"]
    if name == "train":
        return f"ratio vs Trainer {r['ratio']:.2f}, outside fwd/bwd/opt {r['ours']['outside_fraction_of_steps']:.1%}"
    if name == "eval":
        return f"vs batch-1 loop {r['ratio_vs_user_b1']:.2f}x, vs batched loop {r['ratio_vs_user_batch']:.2f}x"
    if name == "mixture":
        return f"end-to-end {r['ratio']:.2f}x, merge+load only {r['ratio_merge_and_load_only']:.2f}x"
    if name == "sweep":
        return ", ".join(f"n={n}: merge {v['merge']['ratio']:.2f}x, share {v['sweep']['merge_share_of_sweep']:.1%}"
                         for n, v in r["n"].items())
    if name == "memory":
        return f"max {r['max_model_sizes']:.2f} model sizes, flat={r['flat']}"
    if name == "device":
        return f"max {r['max_host_model_sizes']:.2f} model sizes of host RSS at {r['model_params'] / 1e6:.0f}M params"
    if name == "throughput":
        return (f"sweep {r['sweep']['ratio_ours']:.2f}x (jobs: {r['sweep']['ratio_ours_jobs']:.2f}x), "
                f"eval {r['gemm']['share_of_1024_peak']:.0%} of GEMM peak, screen "
                + ", ".join(f"{s['token_ratio']:.1f}x" for s in r["screen"]))
    if name == "screen":
        per = r["leave_one_out"] or r["default_scores"]
        return "savings " + ", ".join(f"{k} {v['saving']:.1f}x (top 3 kept {v['same_top3']:.0%})" for k, v in per.items())
    if name == "optimize":
        return ", ".join(f"n={c['n']} {'mem' if c['in_memory'] else 'mapped'}: {c['step_s']:.2f} s/step "
                         f"({c['ratio']:.2f}x plain fwd+bwd, {c['rss_growth_model_sizes']:.1f} model sizes)"
                         for c in r["cases"]) + f"; 64 units < 5 min: {r['goal_64_units_under_5_min']}"
    if name == "scaling":
        return f"n={r['rows'][-1]['n']} token ratio {r['rows'][-1]['token_ratio']:.0f}x" if r["rows"] else "-"
    return "done"


if __name__ == "__main__":
    sys.exit(main())
