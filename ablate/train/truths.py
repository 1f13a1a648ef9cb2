"""What a ground truth's union trains on: each unit's share of the budget, drawn as seeded permutations.

How to run: not directly; `loop.train_member` draws a union's sequences here under its budget
(ablate/study/budgets.py names the budgets and parses --budget, --tokens, --weights):
    seqs, draw = draw_sequences(parts, ["bible-00", "fiction-00"], parse_budget("unit", None, "3,1", ids, recipe), 0)
"""

from __future__ import annotations

import math
import os

import numpy as np

from ablate.core.errors import UsageError
from ablate.study.budgets import Budget

# No union repeats a unit more than this often: a budget past it is a typo (an extra 0 in --tokens), and
# drawing it would run for hours or out of memory before one step trains.
MAX_EPOCHS = 10_000


def _shares(n_total: int, weights: list[float]) -> list[int]:
    """Largest-remainder split of n_total sequences in proportion to weights (each within one)."""
    exact = [n_total * w for w in weights]
    counts = [int(math.floor(x)) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: n_total - sum(counts)]:
        counts[i] += 1
    return counts


def check_draw(parts: list[np.ndarray], unit_ids: list[str], counts: list[int], budget: Budget) -> None:
    """Refuse, in one line and before anything is drawn, a budget no machine trains: more than MAX_EPOCHS
    passes over a unit, or more sequences than this machine's memory holds."""
    what = f"--tokens {budget.tokens}" if budget.kind == "tokens" else f"the {budget.label()} budget"
    for uid, part, need in zip(unit_ids, parts, counts):
        if need > MAX_EPOCHS * part.shape[0]:
            raise UsageError(f"{what} asks for {need / part.shape[0]:,.0f} passes over unit {uid} "
                             f"({part.shape[0] * part.shape[1]:,} tokens), more than {MAX_EPOCHS:,}: lower --tokens")
    need_bytes = sum(counts) * parts[0].shape[1] * parts[0].itemsize
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: no memory figure to check against
        return
    if need_bytes > memory:
        raise UsageError(f"{what} needs {need_bytes / 1e9:,.1f} GB for its training sequences, more than this "
                         f"machine's {memory / 1e9:,.1f} GB of memory: lower --tokens")


def draw_sequences(parts: list[np.ndarray], unit_ids: list[str], budget: Budget,
                   data_seed: int) -> tuple[np.ndarray, dict]:
    """The union's training sequences under a budget, and what was drawn from each unit.

    A unit gives its share as whole seeded permutations of its sequences plus a prefix of
    one more: a share larger than the unit repeats it over epochs (the draw record says so).
    Draws depend only on (data_seed, the unit's position, epoch): deterministic."""
    available = [len(p) for p in parts]
    if budget.is_default:
        counts = available
    else:
        if budget.kind == "sum":
            n_total = sum(available)
        elif budget.kind == "unit":
            n_total = round(sum(available) / len(available))
        else:
            n_total = budget.tokens // parts[0].shape[1]
        weights = list(budget.weights) if budget.weights else [1.0 / len(parts)] * len(parts)
        counts = _shares(n_total, weights)
        for uid, need, w in zip(unit_ids, counts, weights):
            if need == 0:  # a union that trains on none of a unit's data is not a union of it
                raise UsageError(f"unit {uid} gets 0 of the budget's {n_total} sequences (weight {w:.3g}): "
                                 f"leave it out of the mixture or raise its weight")
        check_draw(parts, unit_ids, counts, budget)
    chosen, draw = [], {}
    for i, (part, uid, need) in enumerate(zip(parts, unit_ids, counts)):
        if need == part.shape[0]:
            idx = np.arange(need)  # the whole unit once (today's union): no permutation needed
        else:
            epochs = -(-need // part.shape[0])
            perms = [np.random.default_rng([data_seed, 7919, i, e]).permutation(part.shape[0]) for e in range(epochs)]
            idx = np.concatenate(perms)[:need]
        chosen.append(part[idx])
        draw[uid] = {"sequences": int(need), "available": int(part.shape[0]),
                     "epochs": round(need / part.shape[0], 6), "repeated": bool(need > part.shape[0])}
    return np.concatenate(chosen), draw
