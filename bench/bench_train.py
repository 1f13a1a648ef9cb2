"""Benchmark 1: training throughput of ablate's loop vs `transformers.Trainer`.

How to run:
    .venv/bin/python bench/bench_train.py [--quick] [--study DIR] [--compile] [--out FILE]
    .venv/bin/python bench/bench_train.py --size 135m      # SmolLM2-135M: 6 steps of 2 x 256, 3 rounds of ours / ours fused / Trainer

Same model (the bench study's seed: demo architecture), same data (a union of bench
units, 16 x 128 token batches), same recipe (AdamW 0.9/0.95, wd 0.1, clip 1.0, cosine
to 0.1x) and the same number of steps on both sides. Ours is `ablate.train.loop.run_training`
(checkpointing off: no checkpoint falls inside these runs, as in a demo unit), once with the
default optimizer (`train.optimizer: auto`, the per-tensor AdamW loop on CPU) and once with
`train.optimizer: fused`; the reference is a plain `Trainer` (no logging, no saving, CPU; fused
AdamW on CPU). Runs rotate A/B/C and we report medians, because the machine is shared. Every run has a
fresh process of its own, warmed by two bare steps: ours starts as an ablate job does (threads.claim:
ablate/models/allocator.py keeps freed memory for the next step), the Trainer as a user's script does
(the C library's malloc), both at the same thread count.

Inside every run, forward, backward, clipping and the optimizer step are timed by
wrapping them (PhaseTimers); the rest of the run is the share "outside" them (set-up,
data, scheduler, logging, framework bookkeeping). The optimizer step alone is timed for
the three AdamW implementations, which is what changed in run_training (per-tensor
loop -> foreach). `--compile` also measures torch.compile: cold compile time (fresh inductor
cache), compiled vs eager step, steps to break even (about a minute on a quiet machine);
`--compile-only` runs just that (bench/run.py does, when time is left).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import common


def _data(cfg, pool, n_units: int, seq_len: int):
    from ablate.train.loop import mixture_sequences

    seqs, _ = mixture_sequences(pool, common.unit_ids(cfg)[:n_units], seq_len)
    return seqs


def _fresh_model(pool, seed_id):
    from ablate.models.model import load_member

    model = load_member(pool, seed_id)
    model.train()
    return model


class PhaseTimers:
    """Time forward, backward, clip and optimizer inside a real run by wrapping them.

    Measuring inside the same run (not against a separate bare loop) keeps the shared
    machine's noise out of the split: outside = total - (forward+backward+clip+optimizer).
    """

    def __init__(self, model):
        self.model, self.t = model, {"forward": 0.0, "backward": 0.0, "clip": 0.0, "optimizer": 0.0}
        self.first = self.last = None  # start of the first forward, end of the last timed call

    def _wrap(self, fn, key):
        import functools

        @functools.wraps(fn)  # Trainer inspects forward's signature to pick the batch columns
        def timed(*a, **kw):
            t0 = time.perf_counter()
            if self.first is None and key == "forward":
                self.first = t0
            try:
                return fn(*a, **kw)
            finally:
                self.last = time.perf_counter()
                self.t[key] += self.last - t0
        return timed

    def __enter__(self):
        import torch

        self.saved = (torch.Tensor.backward, torch.nn.utils.clip_grad_norm_, torch.optim.AdamW.step)
        self.model.forward = self._wrap(self.model.forward, "forward")  # instance attribute wins
        torch.Tensor.backward = self._wrap(torch.Tensor.backward, "backward")
        torch.nn.utils.clip_grad_norm_ = self._wrap(torch.nn.utils.clip_grad_norm_, "clip")
        torch.optim.AdamW.step = self._wrap(torch.optim.AdamW.step, "optimizer")
        return self

    def __exit__(self, *exc):
        import torch

        torch.Tensor.backward, torch.nn.utils.clip_grad_norm_, torch.optim.AdamW.step = self.saved
        del self.model.forward


def run_ours(pool, seed_id, seqs, recipe, work: Path) -> dict:
    from ablate.train.loop import run_training

    model = _fresh_model(pool, seed_id)
    with PhaseTimers(model) as pt:
        t0 = time.perf_counter()
        out = run_training(model, seqs, recipe, work, "bench", checkpoint_every=10 ** 9, description="bench")
        dt = time.perf_counter() - t0
    assert out["resumed_from"] == 0 and out["steps"] == math.ceil(len(seqs) / recipe.batch_size)
    return {"total": dt, "setup": pt.first - t0, "loop": pt.last - pt.first, **pt.t}


def run_trainer(pool, seed_id, seqs, recipe, work: Path) -> dict:
    import torch
    from transformers import Trainer, TrainingArguments, default_data_collator
    from transformers.trainer_callback import PrinterCallback

    data = torch.from_numpy(seqs.astype("int64"))

    class Seqs(torch.utils.data.Dataset):
        def __len__(self):
            return len(data)

        def __getitem__(self, i):
            return {"input_ids": data[i], "labels": data[i]}

    steps = math.ceil(len(seqs) / recipe.batch_size)
    args = TrainingArguments(
        output_dir=str(work), per_device_train_batch_size=recipe.batch_size, max_steps=steps,
        learning_rate=recipe.lr, adam_beta1=recipe.beta1, adam_beta2=recipe.beta2, weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.grad_clip, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": recipe.min_lr_ratio}, warmup_steps=recipe.warmup_steps,
        logging_strategy="no", save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=False, seed=recipe.data_seed)
    model = _fresh_model(pool, seed_id)
    with PhaseTimers(model) as pt:
        t0 = time.perf_counter()  # Trainer's set-up counts, as run_training's does
        trainer = Trainer(model=model, args=args, train_dataset=Seqs(), data_collator=default_data_collator)
        trainer.remove_callback(PrinterCallback)  # it prints the final metrics to stdout
        trainer.train()
        dt = time.perf_counter() - t0
    return {"total": dt, "setup": pt.first - t0, "loop": pt.last - pt.first, **pt.t}


def one_run(side: str, pool, seed_id, seqs, recipe, threads: int) -> dict:
    """One timed run of `side`, in this process: started as that side starts in real life, then warmed."""
    import torch

    if side.startswith("ours"):
        from ablate.models.allocator import reuse_freed_memory
        from ablate.models.threads import claim

        claim(threads)  # what `ablate train-partition` does first (run_and_publish)
        malloc = reuse_freed_memory()  # done by claim: what it did
    else:
        torch.set_num_threads(threads)
        malloc = "system: the C library's malloc"
    run_bare(pool, seed_id, seqs[: 2 * recipe.batch_size], recipe)  # two steps: lazy imports, kernels, heap
    with tempfile.TemporaryDirectory(prefix=f"ablate-bench-{side}-") as tmp:
        if side == "trainer":
            return {**run_trainer(pool, seed_id, seqs, recipe, Path(tmp)), "malloc": malloc}
        recipe = replace(recipe, optimizer="fused") if side == "ours_fused" else recipe
        return {**run_ours(pool, seed_id, seqs, recipe, Path(tmp)), "malloc": malloc}


def in_fresh_process(side: str, args, tmp: Path, threads: int) -> dict:
    """one_run in a child interpreter: the allocator is process-wide, so no side may inherit another's."""
    import json
    import subprocess

    out = tmp / f"{side}.json"
    cmd = [common.python(), __file__, "--side", side, "--threads", str(threads), "--out", str(out),
           *common.study_argv(args)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def optimizer_steps(pool, seed_id, recipe, repeats: int) -> dict[str, float]:
    """Median seconds of one AdamW step per implementation, interleaved step by step.

    Gradients are fixed random tensors: this isolates the optimizer from forward/backward."""
    import torch

    impls = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
    models = {k: _fresh_model(pool, seed_id) for k in impls}
    opts = {}
    for k, kw in impls.items():
        for p in models[k].parameters():
            p.grad = torch.randn_like(p) * 1e-3
        opts[k] = torch.optim.AdamW(models[k].parameters(), lr=recipe.lr, betas=(recipe.beta1, recipe.beta2),
                                    weight_decay=recipe.weight_decay, **kw)
    for o in opts.values():
        o.step()  # first step allocates the moment buffers
    times = common.interleave({k: o.step for k, o in opts.items()}, repeats)
    return {k: common.median(v) for k, v in times.items()}


def run_bare(pool, seed_id, seqs, recipe, compiled: bool = False) -> dict:
    """Forward/backward/clip/optimizer only; first-step and mean later-step seconds."""
    import torch

    model = _fresh_model(pool, seed_id)
    fwd = torch.compile(model) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(recipe.beta1, recipe.beta2),
                            weight_decay=recipe.weight_decay, foreach=True)
    data = torch.from_numpy(seqs.astype("int64"))
    steps = math.ceil(len(seqs) / recipe.batch_size)
    times = []
    for s in range(steps):
        batch = data[s * recipe.batch_size:(s + 1) * recipe.batch_size]
        t0 = time.perf_counter()
        fwd(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"first_step": times[0], "step": common.median(times[1:])}


def measure_compile(pool, seed_id, seqs, recipe, rounds: int = 2) -> dict:
    """torch.compile on the bare loop: cold compile seconds (fresh inductor cache), then
    compiled vs eager steady-state steps, interleaved; and the steps it takes to pay off."""
    cold = run_bare(pool, seed_id, seqs, recipe, compiled=True)
    eager, comp = [], []
    for _ in range(rounds):  # later compiles hit the now-warm cache: a few seconds each
        eager.append(run_bare(pool, seed_id, seqs, recipe)["step"])
        comp.append(run_bare(pool, seed_id, seqs, recipe, compiled=True)["step"])
    e, c = common.median(eager), common.median(comp)
    compile_s = cold["first_step"] - e
    return {"compile_s": compile_s, "step_s": c, "eager_step_s": e, "speedup": e / c,
            "break_even_steps": compile_s / (e - c) if e > c else None}


def main(argv=None) -> dict:
    args_p = common.base_parser(__doc__)
    args_p.add_argument("--compile", action="store_true", help="also measure torch.compile (about a minute)")
    args_p.add_argument("--compile-only", action="store_true", help="only the torch.compile measurement")
    args_p.add_argument("--repeats", type=int, default=None)
    args_p.add_argument("--side", choices=("ours", "ours_fused", "trainer"), help=argparse.SUPPRESS)
    args_p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = args_p.parse_args(argv)
    if args.compile or args.compile_only:  # a cold compile, as on a fresh machine: no cached kernels
        import os

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ablate-bench-inductor-")
    import torch

    from ablate.models.model import find_seed
    from ablate.store.pool import Pool
    from ablate.study.context import member_recipe

    root = common.study_root(args, args.quick)
    cfg = common.load_cfg(root)
    pool = Pool(cfg.pool)
    seed_id = find_seed(pool)["model_id"]
    recipe = member_recipe(cfg)
    # Short runs, many A/B pairs: on a shared machine a pair is more comparable than a long run.
    big = args.size != "demo"  # at 135M a step is seconds, not milliseconds: fewer steps and pairs suffice
    seqs = _data(cfg, pool, 2, recipe.seq_len)[: (2 if args.quick else 6 if big else 12) * recipe.batch_size]
    steps = math.ceil(len(seqs) / recipe.batch_size)
    tokens = len(seqs) * recipe.seq_len
    repeats = args.repeats or (1 if args.quick else 3 if big else 5)
    if args.compile_only:
        result = {"benchmark": "train", "compile": measure_compile(pool, seed_id, seqs, recipe)}
        common.emit(result, args.out)
        return result
    if args.side:  # one run in this fresh process (the parent below starts one per run)
        import json

        Path(args.out).write_text(json.dumps(one_run(args.side, pool, seed_id, seqs, recipe, args.threads)))
        return {}
    with tempfile.TemporaryDirectory(prefix="ablate-bench-train-") as tmp:
        tmp = Path(tmp)
        # ours_fused: train.optimizer=fused, the Trainer's AdamW on CPU (opt-in; its members get their own ids)
        sides = {name: (lambda name=name: in_fresh_process(name, args, tmp, torch.get_num_threads()))
                 for name in ("ours", "ours_fused", "trainer")}
        runs = {k: [] for k in sides}
        names = list(sides)
        for r in common.rounds(repeats, args.budget or (600 if big else 120)):  # rotate which side goes first
            for name in names[r % len(names):] + names[:r % len(names)]:
                runs[name].append(sides[name]())
        opt = optimizer_steps(pool, seed_id, recipe, 5 if args.quick or big else 60)
        compiled = measure_compile(pool, seed_id, seqs, recipe) if args.compile else None
    inside = ("forward", "backward", "clip", "optimizer")

    def summary(rs: list[dict]) -> dict:
        total = common.median([r["total"] for r in rs])
        return {"run_s": total, "tok_s": tokens / total, "runs_s": [r["total"] for r in rs],
                "phase_s_per_step": {k: common.median([r[k] for r in rs]) / steps for k in inside},
                "setup_s": common.median([r["setup"] for r in rs]),
                "malloc": rs[0]["malloc"],
                # measured inside each run, then the median over runs (noise stays within a run):
                # of the step loop (first forward to last optimizer step), and of the whole run
                "outside_fraction_of_steps": common.median([1 - sum(r[k] for k in inside) / r["loop"] for r in rs]),
                "outside_fraction_of_run": common.median([1 - sum(r[k] for k in inside) / r["total"] for r in rs])}

    ours, fused, ref = summary(runs["ours"]), summary(runs["ours_fused"]), summary(runs["trainer"])
    result = {
        "benchmark": "train", "model_params": sum(p.numel() for p in _fresh_model(pool, seed_id).parameters()),
        "threads": torch.get_num_threads(), "steps": steps, "batch": recipe.batch_size, "seq_len": recipe.seq_len,
        "tokens_per_run": tokens, "repeats": len(runs["ours"]),
        "ours": ours, "ours_fused": fused, "trainer": ref,
        # ratio of each A/B pair, then the median: robust to the machine's slow spells
        "ratio": common.median([t["total"] / o["total"] for o, t in zip(runs["ours"], runs["trainer"])]),
        # train.optimizer=fused against the Trainer (issue 33's goal at 135M: >= 1.1)
        "ratio_fused": common.median([t["total"] / o["total"] for o, t in zip(runs["ours_fused"], runs["trainer"])]),
        "optimizer_step_s": opt, "foreach_vs_loop_speedup": opt["loop"] / opt["foreach"],
        "fused_vs_loop_speedup": opt["loop"] / opt["fused"],
        "compile": compiled,
    }
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
