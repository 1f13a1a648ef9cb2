"""Continued pretraining: the seed, one member per unit, and union baselines.

How to run:
    ablate seed                               # pretrain the tiny seed on its seed mix
    ablate train-partition fiction-00         # one unit -> one pool member
    ablate train-mixture fiction-00 bible-00  # the retraining baseline on the union

A run is determined by its seed, its data (unit hashes) and its training config,
so its id is a hash of those: asking twice finds the member instead of training
again (`--force` retrains). Every `train.checkpoint_every` steps the model,
optimizer and scheduler state go to `pool/work/<id>/ckpt.pt`; rerunning the
same command after a crash resumes there and ends with the same weights as an
uninterrupted run (CPU). Data order is a seeded permutation computed up front, and
torch's generators (dropout) are reseeded from the run's id at every step, so
resuming needs no data-loader or RNG state. Only a finished run is published.

`run_training` reads top to bottom as one loop around small helpers: device set-up
(`_accelerator`), resume (`_resume`), one optimizer step (`_step`) and a checkpoint
(`_checkpoint`); the seconds of sessions before a resume are energy.SessionClock's, and
splitting a batch over processes is data_parallel's.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ablate.core import faults
from ablate.core.config import StudyConfig, config_hash
from ablate.core.energy import NO_COST, Meter, SessionClock, with_earlier_sessions
from ablate.core.errors import Interrupted, UsageError
from ablate.core.progress import bar, console, final_loss_window
from ablate.data.units import load_unit_tokens
from ablate.models.device import resolve_device
from ablate.models.model import count_params, find_seed, load_member, save_weights, unique_state, versions
from ablate.models.threads import claim as claim_threads
from ablate.store.index import Index, model_row
from ablate.store.pool import Pool, staged_file
from ablate.store.results import now
from ablate.study.budgets import BUDGETS, QUESTIONS, Budget, parse_budget
from ablate.study.context import Recipe, member_id, member_recipe, normalize_units, run_hash, training_dropout
from ablate.train.data_parallel import all_ranks_cost, barrier, rank_world, shard, unwrap
from ablate.train.locks import member_job
from ablate.train.start import start_from_merge, unit_members
from ablate.train.truths import draw_sequences


def as_sequences(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    n = tokens.size // seq_len
    if n == 0:
        raise UsageError(f"{tokens.size} tokens are fewer than one sequence of {seq_len}")
    return tokens[: n * seq_len].reshape(n, seq_len)


def unit_sequences(pool: Pool, unit_ids: list[str], seq_len: int) -> tuple[list[np.ndarray], list[dict]]:
    """Each unit's training sequences and sidecar, in the order of unit_ids."""
    parts, metas = [], []
    for uid in unit_ids:
        tokens, meta = load_unit_tokens(pool, uid)
        parts.append(as_sequences(tokens, seq_len))
        metas.append(meta)
    return parts, metas


def mixture_sequences(pool: Pool, unit_ids: list[str], seq_len: int) -> tuple[np.ndarray, list[dict]]:
    """The default union's training data: every unit's sequences once, stacked (shuffled later)."""
    parts, metas = unit_sequences(pool, unit_ids, seq_len)
    return np.concatenate(parts), metas


def data_order(n_seq: int, recipe: Recipe) -> np.ndarray:
    return np.concatenate([np.random.default_rng([recipe.data_seed, e]).permutation(n_seq)
                           for e in range(recipe.epochs)])


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup, then cosine from 1 to min_ratio at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _accelerator(device: torch.device | None, tf32: bool):
    """Device set-up: the Accelerator for `device` (default cuda if available), bf16 autocast where the
    GPU has it. Returns (accelerator, whether the run is on CUDA)."""
    from accelerate import Accelerator

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda and device.index is not None and rank_world()[1] == 1:
        torch.cuda.set_device(device)  # one process: the configured GPU (launchers give each rank its own)
    if cuda:  # TF32 tensor cores for the fp32 matmuls autocast leaves (Ampere+); off = exact fp32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=not cuda), cuda


def adamw_kwargs(name: str, cuda: bool) -> dict:
    """torch.optim.AdamW's arguments for train.optimizer: auto leaves the choice to torch as ablate always
    has (fused on CUDA; on CPU torch picks the per-tensor loop), the others name one implementation."""
    return {"auto": {"fused": cuda or None}, "fused": {"fused": True}, "foreach": {"foreach": True},
            "loop": {"foreach": False}}[name]


def _optimizer(model, recipe: Recipe, steps: int, cuda: bool):
    """AdamW and the warmup-then-cosine schedule over `steps`."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(recipe.beta1, recipe.beta2),
                                  weight_decay=recipe.weight_decay, **adamw_kwargs(recipe.optimizer, cuda))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, recipe.warmup_steps, recipe.min_lr_ratio))
    return optimizer, scheduler


def _load_ckpt(path: Path) -> dict | None:
    """The last checkpoint, or None; an unreadable one (killed mid-write) means start over."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
    except Exception as exc:
        console.print(f"warning: checkpoint {path} is unreadable ({type(exc).__name__}); starting over",
                      markup=False)
        return None


def _resume(path: Path, job_key: str, model, optimizer, scheduler) -> tuple[int, list[float], dict]:
    """Load this job's last checkpoint into the model, optimizer and scheduler:
    (first step to run, losses so far, seconds spent by the earlier sessions)."""
    ckpt = _load_ckpt(path)
    if ckpt is None or ckpt.get("job") != job_key:  # another recipe's checkpoint: start over
        return 0, [], dict(NO_COST)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])  # no RNG state: _seed_step derives it from the step
    return ckpt["step"], list(ckpt["losses"]), dict(ckpt["carried"])


def _batch(data: torch.Tensor, order: np.ndarray, step: int, batch_size: int, accelerator, pin: bool):
    """This process's share of the step's global batch, on the device, and its loss factor (data_parallel.shard)."""
    idx, scale = shard(order[step * batch_size:(step + 1) * batch_size], accelerator.process_index,
                       accelerator.num_processes)
    batch = data[idx]
    return (batch.pin_memory() if pin else batch).to(accelerator.device, non_blocking=True), scale


def _step(accelerator, model, optimizer, scheduler, batch: torch.Tensor, scale: float | None,
          grad_clip: float) -> float:
    """One optimizer step; returns the global batch's mean loss."""
    with accelerator.autocast():
        loss = model(input_ids=batch, labels=batch).loss
    accelerator.backward(loss if scale is None else loss * scale)
    accelerator.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if scale is None:
        return float(loss.detach())
    return float(accelerator.reduce(loss.detach() * scale, "mean"))


def _checkpoint(path: Path, accelerator, model, optimizer, scheduler, progress: dict) -> None:
    """Model, optimizer and scheduler state plus `progress` (job, step, losses, seconds so far)."""
    if accelerator.is_main_process:  # replicas hold identical states: one writer
        path.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(path) as tmp:
            torch.save(progress | {"model": unwrap(accelerator, model).state_dict(),
                                   "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                       tmp)
            faults.point("ckpt.saved")
    if accelerator.num_processes > 1:  # no rank may exit (Interrupted) while the checkpoint is being written
        accelerator.wait_for_everyone()


@contextlib.contextmanager
def _private_rng(device: torch.device):
    """Training draws from torch's global generators (HF models call nn.Dropout / F.dropout, which take
    no generator argument), so the loop sets them itself; fork_rng hands the caller's state back
    afterwards, so code that runs after training in this process (the next member of `ablate demo`,
    a test) sees its own random stream untouched."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        yield


def _seed_step(job_key: str, step: int, rank: int, cuda: bool) -> None:
    """Seed torch's CPU generator (and this process's GPU's) from the run's identity (job_key: recipe, whose
    data_seed carries the replicate, and member id), the step and the rank: dropout masks are the same on
    every rerun, and a resumed run draws at step s what an uninterrupted one draws there, with no RNG state
    to checkpoint (and none to gather from every rank of a data-parallel run, whose ranks draw apart)."""
    seed = int.from_bytes(hashlib.sha256(f"{job_key}/{step}/{rank}".encode()).digest()[:8], "big") >> 1
    torch.default_generator.manual_seed(seed)
    if cuda:
        torch.cuda.manual_seed(seed)  # the current device: this process's GPU


def run_training(model, seqs: np.ndarray, recipe: Recipe, work_dir: Path, job_key: str, *,
                 checkpoint_every: int, description: str, stop_after: int | None = None,
                 compile: bool = False, tf32: bool = True, device: torch.device | None = None) -> dict:
    """The training loop with checkpoints. Returns loss history and step count.

    Under `accelerate launch` / torchrun each global batch is split across the processes
    (same global batch, same tokens); only the main process writes checkpoints. `device` is
    cfg.device resolved (default: cuda if available); device cpu keeps a GPU machine's run on the CPU.
    """
    accelerator, cuda = _accelerator(device, tf32)
    world = accelerator.num_processes
    if world > recipe.batch_size:
        raise UsageError(f"{world} processes cannot share a batch of {recipe.batch_size} sequences")
    if not accelerator.is_main_process:
        os.environ["ABLATE_QUIET"] = "1"  # one progress bar, the main process's
    order = data_order(len(seqs), recipe)
    steps = math.ceil(len(order) / recipe.batch_size)
    optimizer, scheduler = _optimizer(model, recipe, steps, cuda)
    ckpt_path = work_dir / "ckpt.pt"
    start, losses, carried = _resume(ckpt_path, job_key, model, optimizer, scheduler)
    if start and accelerator.is_main_process:  # a rerun after Ctrl-C or a crash says where it picks up
        console.print(f"{description}: resuming from step {start} of {steps}", markup=False)
    model, optimizer = accelerator.prepare(model, optimizer)
    if compile:  # after prepare, so DDP wraps the eager module; unwrap strips both
        model = torch.compile(model)
    model.train()
    data = torch.from_numpy(seqs.astype(np.int64))
    pin = accelerator.device.type == "cuda"  # page-locked batches: the host-to-device copy runs async
    clock = SessionClock(carried)

    def checkpoint(step: int) -> None:
        _checkpoint(ckpt_path, accelerator, model, optimizer, scheduler,
                    {"job": job_key, "step": step, "losses": losses, "carried": clock.so_far()})

    tokens_per_step = recipe.batch_size * recipe.seq_len
    with bar(description, steps, start, {"loss": "-", "tok_s": "-"}) as update, _private_rng(accelerator.device):
        t0 = time.perf_counter()
        try:
            for step in range(start, steps):
                _seed_step(job_key, step, accelerator.process_index, cuda)
                batch, scale = _batch(data, order, step, recipe.batch_size, accelerator, pin)
                losses.append(_step(accelerator, model, optimizer, scheduler, batch, scale, recipe.grad_clip))
                done = step + 1
                faults.point("train.step")
                rate = (done - start) * tokens_per_step / max(1e-9, time.perf_counter() - t0)
                update(1, loss=f"{losses[-1]:.3f}", tok_s=f"{rate:,.0f}")
                if done % checkpoint_every == 0 and done < steps:
                    checkpoint(done)
                if stop_after is not None and done >= stop_after and done < steps:
                    checkpoint(done)
                    raise Interrupted(f"stopped after step {done}")
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted; last checkpoint in {work_dir}; rerun the same command to resume") from None
    return {"steps": steps, "losses": losses, "carried": carried, "resumed_from": start,
            "model": unwrap(accelerator, model), "world": world}


def _final_loss(losses: list[float]) -> float:
    tail = losses[-final_loss_window(len(losses)):]
    return float(sum(tail) / len(tail))


def run_and_publish(pool: Pool, cfg: StudyConfig, model, seqs, recipe: Recipe, meta: dict, *,
                     description: str, stop_after: int | None, publish) -> dict:
    """Shared by seed and member training: meter, train, fill the price tag, publish."""
    model_id = meta["model_id"]
    work_dir = pool.work_dir(model_id)
    job_key = config_hash({"recipe": recipe.key(), "id": model_id})
    dev = resolve_device(cfg)
    device = "cuda:" + torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    claim_threads(cfg.train.threads)  # this job's share of the cores (ablate/models/threads.py)
    n_params, n_nonembed = count_params(model)
    with Meter(cfg.energy, device) as meter:
        out = run_training(model, seqs, recipe, work_dir, job_key, checkpoint_every=cfg.train.checkpoint_every,
                           description=description, stop_after=stop_after, compile=cfg.train.compile,
                           tf32=cfg.train.tf32, device=dev)
    world = out["world"]
    cost = with_earlier_sessions(all_ranks_cost(meter.result, world), out["carried"])
    if world > 1:
        device = f"{device} x{world}"
    tokens = len(seqs) * recipe.epochs * recipe.seq_len
    meta.update({
        "n_params": n_params, "n_params_nonembed": n_nonembed, "train_tokens": int(tokens),
        "steps": out["steps"], "final_loss": _final_loss(out["losses"]), "loss_curve": out["losses"],
        "wall_s": cost["wall_s"], "cpu_s": cost["cpu_s"], "energy_kwh": cost["energy_kwh"], "co2_kg": cost["co2_kg"],
        "energy_method": cost["energy_method"], "energy_assumptions": cost["energy_assumptions"],
        "flops": 6.0 * n_nonembed * tokens, "flops_convention": "6*N_nonembed*tokens (embeddings/LM head excluded)",
        "device": device, "recipe": recipe.key(), "versions": versions(), "created_at": now(),
        "resumed_from_step": out["resumed_from"], "n_processes": world})
    if rank_world()[0] == 0:  # data-parallel replicas are identical: the main process publishes
        publish(out["model"], meta)
        faults.point("publish.renamed")
        shutil.rmtree(work_dir, ignore_errors=True)
    barrier(world)  # the other processes return once the member exists
    return meta


def _publish_member(pool: Pool):
    def publish(model, meta):
        with pool.staged_member(meta) as staging:
            meta["sha256"] = save_weights(unique_state(model), staging / "model.safetensors")
            meta["size"] = (staging / "model.safetensors").stat().st_size
    return publish


def index_member(pool: Pool, meta: dict) -> None:
    """The index row goes in last, and again on reuse (idempotent upsert)."""
    if rank_world()[0] != 0:  # multi-process training: one writer
        return
    Index(pool).upsert("models", [model_row(meta)])


def train_member(cfg: StudyConfig, pool: Pool, unit_ids: list[str], *, force: bool = False,
                 replicate: int = 0, stop_after: int | None = None, budget: str | None = None,
                 tokens: str | int | None = None, weights: str | list[float] | None = None, log=print) -> dict:
    """train-partition (one unit) and train-mixture (several): returns the member's meta.

    budget/tokens/weights choose the ground truth (see BUDGETS); weights follow unit_ids' order."""
    given = list(unit_ids)
    unit_ids = normalize_units(unit_ids)
    recipe = member_recipe(cfg, replicate)
    plan = parse_budget(budget, tokens, weights, given, recipe)
    if len(unit_ids) == 1 and plan.kind in BUDGETS:
        plan = Budget("sum")  # one unit at its own budget is the unit's member, whatever the question
    pool.ensure_writable()
    pool.clean_leftovers()
    seed = find_seed(pool)
    config, dropout = training_dropout(pool, seed["model_id"], cfg.train.dropout)
    parts, metas = unit_sequences(pool, unit_ids, recipe.seq_len)
    for m in metas:
        if m["tokenizer_id"] != seed["tokenizer_id"]:
            raise UsageError(f"unit {m['unit_id']} was tokenized with {m['tokenizer_id']}, "
                             f"the seed uses {seed['tokenizer_id']}")
    model_id = member_id(seed["model_id"], metas, recipe, replicate, plan, dropout)
    if pool.has_member(model_id) and not force:
        meta = pool.read_meta(model_id)
        log(f"{model_id} is already in the pool (trained {meta['created_at']}); reusing it (--force retrains)")
        index_member(pool, meta)  # a crash after publishing may have skipped the row
        return meta | {"reused": True}
    seqs, draw = draw_sequences(parts, unit_ids, plan, recipe.data_seed)
    kind = "unit" if len(unit_ids) == 1 and plan.is_default else "union"
    n = len(unit_ids)
    meta = {"model_id": model_id, "kind": kind, "units": unit_ids, "seed_id": seed["model_id"],
            "replicate": replicate, "tokenizer_id": seed["tokenizer_id"],
            "config_hash": run_hash(seed["model_id"], metas, recipe, replicate, plan, dropout),
            "data_sha256": {m["unit_id"]: m["data_sha256"] for m in metas},
            "budget": plan.label(), "budget_tokens": int(len(seqs) * recipe.seq_len),
            "weights": list(plan.weights) if plan.weights else [1.0 / n] * n,
            "draw": draw, "question": QUESTIONS[plan.kind], "dropout": dropout,
            "config": {"train": cfg.train.model_dump(), "energy": cfg.energy.model_dump()}}
    for uid, d in draw.items():
        if d["repeated"]:
            log(f"note: {uid} is smaller than its share ({d['sequences']} of {d['available']} sequences): "
                f"repeated over {d['epochs']:.2f} epochs")
    if any(dropout.values()):
        log(f"note: training with the seed's dropout ({', '.join(f'{k} {v:g}' for k, v in dropout.items() if v)}); "
            f"continued pretraining usually runs without: --set train.dropout=zero")
    model = load_member(pool, seed["model_id"], full_hash=cfg.verify_hash, config=config)
    if recipe.start == "merge":  # a polished merge: the run starts from its units' members averaged
        members = unit_members(pool, seed["model_id"], metas, recipe, dropout, replicate)
        meta["start"] = start_from_merge(model, pool, members, meta["weights"], cfg.verify_hash)
    label = unit_ids[0] if kind == "unit" else f"union of {n} (budget {plan.label()})"
    if recipe.start == "merge":
        label += ", from its merge"
    with member_job(pool, model_id, force) as done:  # one job per member: a second one is refused
        meta = done or run_and_publish(pool, cfg, model, seqs, recipe, meta, description=f"train {label}",
                                        stop_after=stop_after, publish=_publish_member(pool))
    index_member(pool, meta)
    return meta
