"""Data-parallel training of one member over several processes (CPUs or GPUs).

How to run:
    accelerate launch --multi_gpu --num_processes 4 -m ablate train-partition fiction-00
    torchrun --nproc_per_node 4 -m ablate train-partition fiction-00        # the same
    # no GPU: the same commands run CPU processes that talk over gloo

`train.run_training` splits every global batch across the processes, so the batch
size, the data order, the token count and hence the member id are those of a
single-process run; DDP averages the gradients. Only the main process checkpoints,
publishes the member and writes the index; the others wait for it. These helpers
are the pieces of that which do not belong to the training loop itself.
"""

from __future__ import annotations

import os

import numpy as np


def rank_world() -> tuple[int, int]:
    """(rank, world size) under `accelerate launch` / torchrun, (0, 1) in a plain process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def shard(idx: np.ndarray, rank: int, world: int) -> tuple[np.ndarray, float | None]:
    """This rank's share of a global batch, and the loss factor that keeps the gradient the global mean.

    DDP averages the ranks' gradients; scaling rank r's mean loss by n_r * world / n makes
    that average equal the single-process mean over all n sequences, even when n does not
    split evenly. A rank left without a sequence (a short last batch) runs one with factor 0,
    so it still joins the gradient all-reduce. One process: no factor, the original ops.
    """
    if world == 1:
        return idx, None
    share = np.array_split(idx, world)[rank]
    if len(share) == 0:
        return idx[:1], 0.0
    return share, len(share) * world / len(idx)


def unwrap(accelerator, model):
    """The plain module: no DDP, no torch.compile wrapper (whose keys carry an `_orig_mod.` prefix).

    keep_torch_compile=False also stops accelerate from re-pointing the compiled wrapper at
    the bare module, which would silently drop DDP when a checkpoint is taken mid-run.
    """
    try:
        return accelerator.unwrap_model(model, keep_torch_compile=False)
    except TypeError:  # accelerate < 1.2 always unwraps compiled modules
        return accelerator.unwrap_model(model)


def all_ranks_cost(cost: dict, world: int) -> dict:
    """The price tag of all processes of a multi-process run (gathered on every rank)."""
    if world == 1:
        return cost
    import torch.distributed as dist

    costs: list = [None] * world
    dist.all_gather_object(costs, cost)
    if any("GPU" in c["energy_method"] for c in costs):
        # codecarbon's NVML reading covers every visible GPU in each rank: summing would count them world times
        return cost | {"energy_method": cost["energy_method"] + f" (rank 0 of {world} processes; NVML covers "
                       f"all visible GPUs, other ranks' CPU/RAM share not added)"}
    total = dict(cost)
    for key in ("energy_kwh", "co2_kg", "cpu_s"):
        total[key] = sum(c[key] for c in costs)
    total["wall_s"] = max(c["wall_s"] for c in costs)
    total["energy_method"] = cost["energy_method"] + f" (summed over {world} processes)"
    total["energy_assumptions"] = dict(cost["energy_assumptions"], processes=world)
    return total


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
