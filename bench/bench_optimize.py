"""Benchmark 11: `ablate optimize`'s merged route at n = 8, 16, 64 units of the demo model: time per step, memory.

How to run:
    .venv/bin/python bench/bench_optimize.py [--quick] [--study DIR] [--out FILE] [--steps 40]

One mirror-descent step (optimize/merged_route.py) is: theta(w) written into the model (MemberSpace.load),
forward + backward over the fit windows of every eval set the objective reads (the mean over all of
the study's eval sets here), one projection per set (MemberSpace.project), one capped EG step.
Reference, measured in the same run: forward + backward of the plain seed model over the same windows
(what any gradient method pays); the ratio is the merge's own overhead per step. Members beyond the
study's real ones are its members perturbed (timing does not care what the weights learned).
Both routes are run: members stacked in memory (one [n, P] matrix) and members left mapped from their
files (the route for members that do not all fit: the page cache holds what it can). Memory is the
resident-set growth while building the space and after the timed steps, in model sizes (P x 4 bytes;
mapped pages count once read, but the kernel may drop them: they are the page cache, not the heap). The goal: a whole
`ablate optimize` (40 steps + the held comparison) over 64 units of the demo model in < 5 min on 2 cores,
projected from the measured per-step time at the demo's eval-set size (40 kB per domain, 5 domains).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import common

DEMO_EVAL_TOKENS = 5 * 13_000  # the demo's five 40 kB eval sets (~13k tokens each at vocab 4096)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def _members(pool, real: list[str], n: int, folder: Path) -> list[Path]:
    """n member files: the real ones, then copies of them with a seeded perturbation."""
    import torch
    from safetensors.torch import load_file, save_file

    paths = [pool.weights_path(m) for m in real][:n]
    gen = torch.Generator().manual_seed(0)
    while len(paths) < n:
        state = load_file(str(pool.weights_path(real[len(paths) % len(real)])))
        state = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in state.items()}
        path = folder / f"synthetic-{len(paths)}.safetensors"
        save_file(state, str(path))
        paths.append(path)
    return paths


def _step_times(space, model, fit: dict, steps: int, batch: int) -> list[float]:
    from ablate.optimize.losses import set_nll
    from ablate.optimize.simplex import mirror_step

    w = np.full(space.n, 1.0 / space.n)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        space.load(w)
        grad = np.zeros(space.n)
        for windows in fit.values():
            model.zero_grad(set_to_none=True)
            set_nll(model, windows, batch, grad=True)
            grad += space.project() / len(fit)
        w = mirror_step(w, grad, 0.1, None)
        times.append(time.perf_counter() - t0)
    return times


def _plain_times(model, fit: dict, steps: int, batch: int) -> list[float]:
    from ablate.optimize.losses import set_nll

    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        for windows in fit.values():
            model.zero_grad(set_to_none=True)
            set_nll(model, windows, batch, grad=True)
        times.append(time.perf_counter() - t0)
    return times


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__)
    parser.add_argument("--steps", type=int, default=None, help="steps timed per case (default 5, quick 2)")
    args = parser.parse_args(argv)
    from ablate.models.model import model_from_config, seed_config
    from ablate.optimize.protocol import split_windows
    from ablate.scoring.inplace import MemberSpace

    cfg, pool, study = common.open_study(args)
    real = [study.unit_member(u) for u in common.unit_ids(cfg)]
    steps = args.steps or (2 if args.quick else 5)
    sizes = (2, 4) if args.quick else (8, 16, 64)
    names = [ev["domain"] for ev in study.evals]
    split = split_windows(study, names, cfg.optimize.fit_fraction, cfg.optimize.split_seed)
    fit = {s: part["fit"] for s, part in split.items()}
    fit_tokens = int(sum(f.numel() for f in fit.values()))
    batch = cfg.eval.batch_size
    cases = []
    with tempfile.TemporaryDirectory(prefix="ablate-bench-opt-") as tmp:
        paths = _members(pool, real, max(sizes), Path(tmp))
        for n in sizes:
            for in_memory in (True, False):
                model = model_from_config(seed_config(pool, study.seed["model_id"]))
                model_bytes = sum(p.numel() for p in model.parameters()) * 4
                before = _rss_bytes()
                space = MemberSpace(paths[:n], model, keep_in_memory=in_memory)
                grown = _rss_bytes() - before
                ours = _step_times(space, model, fit, steps, batch)
                stepped = _rss_bytes() - before  # mapped members count once their pages were read
                plain = _plain_times(model, fit, steps, batch)
                per_step = common.median(ours)
                per_token = per_step / fit_tokens
                projected = 40 * per_token * DEMO_EVAL_TOKENS / 2 + 2 * per_token / 3 * DEMO_EVAL_TOKENS / 2
                cases.append({"n": n, "in_memory": in_memory, "step_s": per_step,
                              "plain_fwd_bwd_s": common.median(plain), "ratio": per_step / common.median(plain),
                              "rss_growth_model_sizes": grown / model_bytes,
                              "rss_after_steps_model_sizes": stepped / model_bytes,
                              "projected_optimize_s_demo_eval": projected})
                del space, model
    result = {"benchmark": "optimize", "fit_tokens": fit_tokens, "steps_timed": steps, "eval_sets": names,
              "demo_eval_tokens_assumed": DEMO_EVAL_TOKENS, "cases": cases,
              "goal_64_units_under_5_min": all(c["projected_optimize_s_demo_eval"] < 300 for c in cases
                                               if c["n"] == 64)}
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
