"""Training and evaluation at SmolLM2-135M on a GPU in bf16, as MFU against a bf16 GEMM peak measured in the same run.

How to run (needs only torch and transformers (+ accelerate): no pool, no DuckDB, no datasets, no weights):
    python bench/gpu_135m.py --out DIR                      # CUDA, bf16: DIR/gpu_135m.json, ~1-2 min on an H200
    python bench/gpu_135m.py --tiny --device cpu --out DIR  # the same code path on CPU, tiny (tests/test_bench_smoke.py)
    python bench/gpu_135m.py --weights models/smollm2-135m  # real weights instead of random ones

The model is SmolLM2-135M's architecture (bench/smollm2-135m-config.json, its config.json) with random weights
and random token ids: throughput does not depend on the values, so nothing but this repository has to reach
the GPU machine. Four measurements, each pair interleaved A/B in one run (medians):
  gemm   bf16 torch.mm peak at 8192^3 and at the LM head's shape (best of 10): the MFU denominators, measured
         here, never a datasheet number.
  train  ablate's training step as ablate/train/loop.py runs it on CUDA (accelerate bf16 autocast, fused AdamW,
         clip 1.0, TF32 on, the loss read back every step) against transformers.Trainer (bf16=True, its default
         fused AdamW), same model, batches and step count: seconds per steady step, ratio, MFU (3x forward FLOPs).
  eval   ablate's evaluation as ablate/scoring/evaluate.py runs it (bf16 autocast, logits only for predicting
         positions, the chunked loss of ablate/scoring/losses.py) against a user's loop
         (`model(input_ids, labels=input_ids).loss`): tokens/s, ratio, MFU (forward FLOPs).
FLOPs: bench/common.forward_flops (projections, causal attention, LM head), the same count as the CPU rows.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import forward_flops  # noqa: E402  (stdlib-only at import)

CONFIG = HERE / "smollm2-135m-config.json"
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 512}


def losses_module():
    """ablate/scoring/losses.py loaded by path: it needs only torch, while the ablate.scoring package
    imports the pool (DuckDB), which a bare GPU machine may lack."""
    spec = importlib.util.spec_from_file_location("ablate_losses", HERE.parent / "ablate" / "scoring" / "losses.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_model(args, device):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if args.weights:
        return AutoModelForCausalLM.from_pretrained(args.weights, dtype=torch.float32).to(device), "real weights"
    config = json.loads(CONFIG.read_text()) | (TINY if args.tiny else {})
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**config)).to(device), \
        "random weights from SmolLM2-135M's config.json (throughput does not depend on weight values)"


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn, device, repeats: int) -> float:
    fn()
    out = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return min(out)


def gemm_peaks(shapes: dict[str, tuple[int, int, int]], dtype, device, repeats: int = 10) -> dict[str, float]:
    """FLOP/s of torch.mm at each (m, k, n), best of `repeats`."""
    import torch

    out = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
        out[name] = 2 * m * k * n / best_seconds(lambda: torch.mm(a, b), device, repeats)
    return out


def autocast(device):
    """bf16 autocast on CUDA (ablate's training and its eval.precision=bf16); the CPU runs fp32, as ablate does."""
    from contextlib import nullcontext

    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def ours_train(make_model, data, steps: int, device) -> list[float]:
    """Seconds of each step of ablate's training step (ablate/train/loop.py: _accelerator, _optimizer, _batch, _step)."""
    import torch
    from accelerate import Accelerator

    cuda = device.type == "cuda"
    accelerator = Accelerator(mixed_precision="bf16" if cuda and torch.cuda.is_bf16_supported() else "no", cpu=not cuda)
    model = make_model()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    times = []
    for step in range(steps):
        sync(device)
        t0 = time.perf_counter()
        batch = data[step % len(data)]
        batch = (batch.pin_memory() if cuda else batch).to(accelerator.device, non_blocking=True)
        with accelerator.autocast():
            loss = model(input_ids=batch, labels=batch).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())  # ablate reads every step's loss back (its progress bar and loss curve)
        times.append(time.perf_counter() - t0)
    return times


def trainer_train(make_model, data, steps: int, device, work: Path) -> list[float]:
    """Seconds of each step of transformers.Trainer on the same batches (its callbacks bracket a step)."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    times, cuda = [], device.type == "cuda"

    class Seqs(torch.utils.data.Dataset):
        def __len__(self):
            return steps * data.size(1)

        def __getitem__(self, i):
            row = data[(i // data.size(1)) % len(data), i % data.size(1)]
            return {"input_ids": row, "labels": row}

    class StepClock(TrainerCallback):
        def on_step_begin(self, *a, **kw):
            sync(device)
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **kw):
            sync(device)
            times.append(time.perf_counter() - self.t0)

    args = TrainingArguments(output_dir=str(work), per_device_train_batch_size=data.size(1), max_steps=steps,
                             learning_rate=6e-5, adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.1, max_grad_norm=1.0,
                             lr_scheduler_type="constant", logging_strategy="no", save_strategy="no", report_to="none",
                             use_cpu=not cuda, bf16=cuda, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    trainer = Trainer(model=make_model(), args=args, train_dataset=Seqs(), callbacks=[StepClock()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return times


def ours_eval(model, windows, batch_size: int, losses, device) -> float:
    """Σ NLL as ablate/scoring/evaluate.py's evaluate_tokens computes it (full windows)."""
    import torch

    total = torch.zeros((), dtype=torch.float64, device=device)
    keep = torch.arange(windows.size(1) - 1, device=device)
    with torch.inference_mode(), autocast(device):
        for i in range(0, windows.size(0), batch_size):
            ids = windows[i:i + batch_size]
            tok = losses.token_nll(model(input_ids=ids, logits_to_keep=keep).logits, ids[:, 1:])
            total += losses.total_nll(tok).double()
            losses.window_sums(tok)  # the per-window sums evaluate_tokens keeps for the bootstrap
    return float(total)


def user_eval(model, windows, batch_size: int, device) -> float:
    """What a user writes: the mean loss per batch, times its token count."""
    import torch

    total = 0.0
    with torch.no_grad(), autocast(device):
        for i in range(0, windows.size(0), batch_size):
            ids = windows[i:i + batch_size]
            total += model(input_ids=ids, labels=ids).loss.item() * ids.size(0) * (ids.size(1) - 1)
    return total


def steady(times: list[float]) -> float:
    """Median step after the first two (allocator warm-up, first kernels' autotuning)."""
    return statistics.median(times[2:] if len(times) > 2 else times)


def train_rounds(base, data, args, device, rounds: int) -> dict[str, list[float]]:
    """Steady seconds per step of each side, per round, the side going first alternating."""
    import copy
    import tempfile

    out = {"ours": [], "trainer": []}
    with tempfile.TemporaryDirectory(prefix="gpu-135m-trainer-") as work:
        sides = {"ours": lambda: ours_train(lambda: copy.deepcopy(base), data, args.steps, device),
                 "trainer": lambda: trainer_train(lambda: copy.deepcopy(base), data, args.steps, device, Path(work))}
        for r in range(rounds):
            for name in (["ours", "trainer"] if r % 2 == 0 else ["trainer", "ours"]):
                out[name].append(steady(sides[name]()))
    return out


def eval_rounds(model, windows, args, device, rounds: int) -> tuple[dict, dict]:
    """Seconds of one pass over the windows per side and round (interleaved), and each side's Σ NLL."""
    losses = losses_module()
    model.eval()
    sides = {"ours": lambda: ours_eval(model, windows, args.batch, losses, device),
             "user": lambda: user_eval(model, windows, args.batch, device)}
    nll = {k: f() for k, f in sides.items()}  # warm-up, and the check that both measure the same thing
    times = {k: [] for k in sides}
    for r in range(rounds):
        for name in (["ours", "user"] if r % 2 == 0 else ["user", "ours"]):
            sync(device)
            t0 = time.perf_counter()
            sides[name]()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times, nll


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="directory for gpu_135m.json (printed either way)")
    p.add_argument("--device", default=None, help="cuda (default when a GPU is visible) or cpu")
    p.add_argument("--tiny", action="store_true", help="a tiny model and sizes: the code path, not a measurement")
    p.add_argument("--weights", help="a HF directory with real SmolLM2-135M weights (default: random ones)")
    p.add_argument("--rounds", type=int, default=None, help="A/B rounds per comparison (default 3; tiny 1)")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default 20; tiny 3)")
    p.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 2048; tiny 64)")
    p.add_argument("--batch", type=int, default=None, help="sequences per batch, train and eval (default 16; tiny 4)")
    p.add_argument("--windows", type=int, default=None, help="eval windows per pass (default 128; tiny 8)")
    args = p.parse_args(argv)
    for key, full, tiny in (("rounds", 3, 1), ("steps", 20, 3), ("seq", 2048, 64), ("batch", 16, 4),
                            ("windows", 128, 8)):
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda:  # ablate's train.tf32 default, for the fp32 matmuls autocast leaves
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    t_start = time.perf_counter()
    base, weights_note = build_model(args, device)
    cfg = base.config
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, cfg.vocab_size, (4, args.batch, args.seq), generator=gen)  # 4 batches, cycled
    windows = torch.randint(0, cfg.vocab_size, (args.windows, args.seq), generator=gen).to(device)
    dtype = torch.bfloat16 if cuda else torch.float32
    big = 256 if args.tiny else 8192
    head = (args.batch * (args.seq - 1), cfg.hidden_size, cfg.vocab_size)
    peaks = gemm_peaks({f"{big}^3": (big, big, big), "x".join(map(str, head)): head}, dtype, device)
    peak = peaks[f"{big}^3"]
    train = train_rounds(base, data, args, device, args.rounds)
    eval_s, nll = eval_rounds(base, windows, args, device, args.rounds)
    step_flops = 3 * forward_flops(cfg, [(0, args.seq)] * args.batch)  # forward + backward (2x)
    eval_flops = forward_flops(cfg, [(0, args.seq)] * args.windows)
    med = {k: statistics.median(v) for k, v in (train | {f"eval_{k}": v for k, v in eval_s.items()}).items()}
    result = {
        "benchmark": "gpu_135m", "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__, "precision": "bf16 autocast" if cuda else "fp32", "model": weights_note,
        "params": sum(p.numel() for p in base.parameters()), "tiny": args.tiny,
        "sizes": {"batch": args.batch, "seq": args.seq, "steps_per_run": args.steps, "eval_windows": args.windows,
                  "rounds": args.rounds},
        "gemm_peak_tflop_s": {k: v / 1e12 for k, v in peaks.items()},
        "train": {"ours_step_s": med["ours"], "trainer_step_s": med["trainer"], "rounds_s": train,
                  "ratio_vs_trainer": statistics.median(t / o for o, t in zip(train["ours"], train["trainer"])),
                  "tok_s": args.batch * args.seq / med["ours"], "mfu": step_flops / med["ours"] / peak,
                  "trainer_mfu": step_flops / med["trainer"] / peak},
        "eval": {"ours_s": med["eval_ours"], "user_s": med["eval_user"], "rounds_s": eval_s,
                 "ratio_vs_user": statistics.median(u / o for o, u in zip(eval_s["ours"], eval_s["user"])),
                 "tok_s": args.windows * (args.seq - 1) / med["eval_ours"],
                 "mfu": eval_flops / med["eval_ours"] / peak, "user_mfu": eval_flops / med["eval_user"] / peak,
                 "nll_rel_diff_vs_user": abs(nll["user"] / nll["ours"] - 1)},
        "mfu_denominator": f"bf16 torch.mm at {big}^3 measured in this run" if cuda else f"fp32 torch.mm at {big}^3",
        "total_s": time.perf_counter() - t_start,
    }
    assert math.isfinite(result["eval"]["nll_rel_diff_vs_user"])
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_135m.json").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
