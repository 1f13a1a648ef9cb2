"""Where a union's training starts (train.start): the seed, as every member and union has, or the merge of the
mixture's unit members, weighted as the mixture.

Why the merge: it already holds what the members share, and lacks what training on the mixture itself adds (a
third of a union's task vector lies outside its members' span, docs/fidelity.md "Forgetting"). A short run from it
adds that part at a fraction of a union's cost: the `polish` proxy (fidelity.polish_unions, budgets.polish_config).
"""

from __future__ import annotations

import torch
from safetensors import safe_open

from ablate.core.errors import UsageError
from ablate.models.model import check_weights_file, load_state
from ablate.store.pool import Pool
from ablate.study.context import Recipe, member_id


def unit_members(pool: Pool, seed_id: str, unit_metas: list[dict], recipe: Recipe, dropout: dict,
                 replicate: int = 0) -> list[str]:
    """The first-replicate member of each unit under `recipe` started from the seed: what the merge averages. A run
    of another replicate (`recipe`'s data seed moved by 1000 each) merges the same members: only its own data order
    differs."""
    base = Recipe(**{**recipe.__dict__, "start": "seed", "data_seed": recipe.data_seed - 1000 * replicate})
    ids = [member_id(seed_id, [m], base, 0, None, dropout) for m in unit_metas]
    missing = [m["unit_id"] for m, i in zip(unit_metas, ids) if not pool.has_member(i)]
    if missing:
        raise UsageError(f"train.start=merge starts from the members of {', '.join(missing)}, not in the pool: "
                         f"ablate train-partition {' '.join(missing)} first")
    return ids


def merged_state(pool: Pool, members: list[str], weights: list[float], full_hash: bool) -> dict[str, torch.Tensor]:
    """The weighted average of the members' weights, summed in float32 in member order (as the `merged` proxy's
    merge, scoring/merge.py, whose streaming a single start does not need); integer buffers from the first."""
    acc: dict[str, torch.Tensor] = {}
    for i, (member, w) in enumerate(zip(members, weights)):
        path = pool.weights_path(member)
        check_weights_file(path, pool.read_meta(member), full_hash)
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                t = fh.get_tensor(key)
                if not t.is_floating_point():
                    acc.setdefault(key, t)
                elif i == 0:
                    acc[key] = t.to(torch.float32) * w
                else:
                    acc[key].add_(t.to(torch.float32), alpha=w)
    return acc


def start_from_merge(model, pool: Pool, members: list[str], weights: list[float], full_hash: bool) -> dict:
    """Load the weighted merge of `members` into `model` (the seed's architecture); returns the meta's `start`."""
    total = sum(weights)
    load_state(model, merged_state(pool, members, [w / total for w in weights], full_hash),
               "the merge of " + "+".join(members))
    return {"from": "merge", "members": members, "weights": [float(w) for w in weights]}
