"""Continued pretraining: the seed, one member per unit, and union baselines.

How to run:
    ablate seed                               # pretrain the tiny seed on its seed mix
    ablate train-partition fiction-00         # one unit -> one pool member
    ablate train-mixture fiction-00 bible-00  # the retraining baseline on the union

A run is determined by its seed, its data (unit hashes) and its training config,
so its id is a hash of those: asking twice finds the member instead of training
again (`--force` retrains). Every `train.checkpoint_every` steps the model,
optimizer, scheduler and RNG state go to `pool/work/<id>/ckpt.pt`; rerunning the
same command after a crash resumes there and ends with the same weights as an
uninterrupted run (CPU). Data order is a seeded permutation computed up front, so
resuming needs no data-loader state. Only a finished run is published.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ablate import faults
from ablate.config import StudyConfig, config_hash
from ablate.device import resolve_device
from ablate.energy import Meter
from ablate.errors import UsageError
from ablate.locks import member_job
from ablate.model import count_params, load_member, save_weights, unique_state, versions
from ablate.parallel import all_ranks_cost, barrier, rank_world, shard, unwrap
from ablate.pool import Pool
from ablate.progress import bar, console, final_loss_window
from ablate.results import now
from ablate.study import Recipe, member_id, member_recipe, normalize_units, run_hash
from ablate.truths import BUDGETS, QUESTIONS, Budget, draw_sequences, parse_budget
from ablate.units import load_unit_tokens


class Interrupted(Exception):
    """Raised after a checkpoint when a run is stopped on purpose (tests, Ctrl-C)."""


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


def _save_ckpt(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    faults.point("ckpt.saved")
    tmp.replace(path)


def _process_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


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


def run_training(model, seqs: np.ndarray, recipe: Recipe, work_dir: Path, job_key: str, *,
                 checkpoint_every: int, description: str, stop_after: int | None = None,
                 compile: bool = False, tf32: bool = True, device: torch.device | None = None) -> dict:
    """The training loop with checkpoints. Returns loss history and step count.

    Under `accelerate launch` / torchrun each global batch is split across the processes
    (same global batch, same tokens); only the main process writes checkpoints. `device` is
    cfg.device resolved (default: cuda if available); device cpu keeps a GPU machine's run on the CPU.
    """
    from accelerate import Accelerator

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    if cuda and device.index is not None and rank_world()[1] == 1:
        torch.cuda.set_device(device)  # one process: the configured GPU (launchers give each rank its own)
    if cuda:  # TF32 tensor cores for the fp32 matmuls autocast leaves (Ampere+); off = exact fp32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    bf16 = cuda and torch.cuda.is_bf16_supported()
    accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=not cuda)
    rank, world = accelerator.process_index, accelerator.num_processes
    if world > recipe.batch_size:
        raise UsageError(f"{world} processes cannot share a batch of {recipe.batch_size} sequences")
    if not accelerator.is_main_process:
        os.environ["ABLATE_QUIET"] = "1"  # one progress bar, the main process's
    order = data_order(len(seqs), recipe)
    steps = math.ceil(len(order) / recipe.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(recipe.beta1, recipe.beta2),
                                  weight_decay=recipe.weight_decay, fused=cuda or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps, recipe.warmup_steps, recipe.min_lr_ratio))
    ckpt_path = work_dir / "ckpt.pt"
    start, losses, carried = 0, [], {"wall_s": 0.0, "cpu_s": 0.0, "energy_kwh": 0.0, "co2_kg": 0.0}
    ckpt = _load_ckpt(ckpt_path)
    if ckpt is not None:
        if ckpt.get("job") == job_key:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            torch.set_rng_state(ckpt["rng"])
            start, losses, carried = ckpt["step"], list(ckpt["losses"]), dict(ckpt["carried"])
            if accelerator.is_main_process:  # a rerun after Ctrl-C or a crash says where it picks up
                console.print(f"{description}: resuming from step {start} of {steps}", markup=False)
    model, optimizer = accelerator.prepare(model, optimizer)
    if compile:  # after prepare, so DDP wraps the eager module; unwrap strips both
        model = torch.compile(model)
    model.train()
    data = torch.from_numpy(seqs.astype(np.int64))
    pin = accelerator.device.type == "cuda"  # page-locked batches: the host-to-device copy runs async

    session_start = (time.perf_counter(), _process_cpu_s())

    def checkpoint(step: int) -> None:
        if accelerator.is_main_process:  # replicas hold identical states: one writer
            work_dir.mkdir(parents=True, exist_ok=True)
            # seconds spent so far, so a resumed run still pays for the sessions before it
            so_far = dict(carried, wall_s=carried["wall_s"] + time.perf_counter() - session_start[0],
                          cpu_s=carried["cpu_s"] + _process_cpu_s() - session_start[1])
            _save_ckpt(ckpt_path, {"job": job_key, "step": step, "losses": losses, "carried": so_far,
                                   "model": unwrap(accelerator, model).state_dict(),
                                   "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                   "rng": torch.get_rng_state()})
        if world > 1:  # no rank may exit (Interrupted) while the checkpoint is being written
            accelerator.wait_for_everyone()

    tokens_per_step = recipe.batch_size * recipe.seq_len
    with bar(description, steps, start, {"loss": "-", "tok_s": "-"}) as update:
        t0 = time.perf_counter()
        step = start
        try:
            for step in range(start, steps):
                idx, scale = shard(order[step * recipe.batch_size:(step + 1) * recipe.batch_size], rank, world)
                batch = data[idx]
                batch = (batch.pin_memory() if pin else batch).to(accelerator.device, non_blocking=True)
                with accelerator.autocast():
                    loss = model(input_ids=batch, labels=batch).loss
                accelerator.backward(loss if scale is None else loss * scale)
                accelerator.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()) if scale is None else  # the global batch's mean loss
                              float(accelerator.reduce(loss.detach() * scale, "mean")))
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
    job_key = config_hash({"recipe": asdict(recipe), "id": model_id})
    dev = resolve_device(cfg)
    device = "cuda:" + torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    n_params, n_nonembed = count_params(model)
    with Meter(cfg.energy, device) as meter:
        out = run_training(model, seqs, recipe, work_dir, job_key, checkpoint_every=cfg.train.checkpoint_every,
                           description=description, stop_after=stop_after, compile=cfg.train.compile,
                           tf32=cfg.train.tf32, device=dev)
    world = out["world"]
    cost = all_ranks_cost(meter.result, world)
    if world > 1:
        device = f"{device} x{world}"
    carried = dict(out["carried"])
    if carried["cpu_s"] > 0 and not carried["energy_kwh"] and cost["cpu_s"] > 0:
        # Earlier sessions (before a crash) were not metered: charge them at this session's
        # energy per CPU second, and say so.
        scale = carried["cpu_s"] / cost["cpu_s"]
        carried["energy_kwh"], carried["co2_kg"] = cost["energy_kwh"] * scale, cost["co2_kg"] * scale
        cost = dict(cost, energy_method=cost["energy_method"] + "; earlier interrupted sessions scaled by CPU time")
    tokens = len(seqs) * recipe.epochs * recipe.seq_len
    meta.update({
        "n_params": n_params, "n_params_nonembed": n_nonembed, "train_tokens": int(tokens),
        "steps": out["steps"], "final_loss": _final_loss(out["losses"]), "loss_curve": out["losses"],
        "wall_s": cost["wall_s"] + carried["wall_s"], "cpu_s": cost["cpu_s"] + carried["cpu_s"],
        "energy_kwh": cost["energy_kwh"] + carried["energy_kwh"], "co2_kg": cost["co2_kg"] + carried["co2_kg"],
        "energy_method": cost["energy_method"], "energy_assumptions": cost["energy_assumptions"],
        "flops": 6.0 * n_nonembed * tokens, "flops_convention": "6*N_nonembed*tokens (embeddings/LM head excluded)",
        "device": device, "recipe": asdict(recipe), "versions": versions(), "created_at": now(),
        "resumed_from_step": out["resumed_from"], "n_processes": world})
    if rank_world()[0] == 0:  # data-parallel replicas are identical: the main process publishes
        publish(out["model"], meta)
        faults.point("publish.renamed")
        shutil.rmtree(work_dir, ignore_errors=True)
    barrier(world)  # the other processes return once the member exists
    return meta


def _publish_member(pool: Pool):
    def publish(model, meta):
        staging = pool.staging_dir(meta["model_id"])
        try:
            meta["sha256"] = save_weights(unique_state(model), staging / "model.safetensors")
            meta["size"] = (staging / "model.safetensors").stat().st_size
            pool.publish(staging, meta)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return publish


def index_member(pool: Pool, meta: dict) -> None:
    """The index row goes in last, and again on reuse (idempotent upsert)."""
    from ablate.index import Index, model_row

    if rank_world()[0] != 0:  # multi-process training: one writer
        return
    Index(pool).upsert("models", [model_row(meta)])


def train_member(cfg: StudyConfig, pool: Pool, unit_ids: list[str], *, force: bool = False,
                 replicate: int = 0, stop_after: int | None = None, budget: str | None = None,
                 tokens: str | int | None = None, weights: str | list[float] | None = None, log=print) -> dict:
    """train-partition (one unit) and train-mixture (several): returns the member's meta.

    budget/tokens/weights choose the ground truth (see BUDGETS); weights follow unit_ids' order."""
    from ablate.model import find_seed

    given = list(unit_ids)
    unit_ids = normalize_units(unit_ids)
    recipe = member_recipe(cfg, replicate)
    plan = parse_budget(budget, tokens, weights, given, recipe)
    if len(unit_ids) == 1 and plan.kind in BUDGETS:
        plan = Budget("sum")  # one unit at its own budget is the unit's member, whatever the question
    pool.ensure_writable()
    pool.clean_leftovers()
    seed = find_seed(pool)
    parts, metas = unit_sequences(pool, unit_ids, recipe.seq_len)
    for m in metas:
        if m["tokenizer_id"] != seed["tokenizer_id"]:
            raise UsageError(f"unit {m['unit_id']} was tokenized with {m['tokenizer_id']}, "
                             f"the seed uses {seed['tokenizer_id']}")
    model_id = member_id(seed["model_id"], metas, recipe, replicate, plan)
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
            "config_hash": run_hash(seed["model_id"], metas, recipe, replicate, plan),
            "data_sha256": {m["unit_id"]: m["data_sha256"] for m in metas},
            "budget": plan.label(), "budget_tokens": int(len(seqs) * recipe.seq_len),
            "weights": list(plan.weights) if plan.weights else [1.0 / n] * n,
            "draw": draw, "question": QUESTIONS[plan.kind],
            "config": {"train": cfg.train.model_dump(), "energy": cfg.energy.model_dump()}}
    for uid, d in draw.items():
        if d["repeated"]:
            log(f"note: {uid} is smaller than its share ({d['sequences']} of {d['available']} sequences): "
                f"repeated over {d['epochs']:.2f} epochs")
    model = load_member(pool, seed["model_id"], full_hash=cfg.verify_hash)
    label = unit_ids[0] if kind == "unit" else f"union of {n} (budget {plan.label()})"
    with member_job(pool, model_id, force) as done:  # one job per member: a second one is refused
        meta = done or run_and_publish(pool, cfg, model, seqs, recipe, meta, description=f"train {label}",
                                        stop_after=stop_after, publish=_publish_member(pool))
    index_member(pool, meta)
    return meta
