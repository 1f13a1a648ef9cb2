"""Ground truths: how much a union trains on, and in which proportions.

How to run:
    ablate train-mixture fiction-00 bible-00 --budget unit             # equal compute: one unit's tokens
    ablate train-mixture fiction-00 bible-00 --budget sum              # add data: k x one unit's tokens
    ablate train-mixture fiction-00 bible-00 --tokens 65536 --weights 3,1

A data ablation asks one of two questions, each with its own ground truth (train.py trains
them; this module owns what they draw):
  "unit": which composition is best at equal compute? The tokens of one unit, shared out
          among the units (equal shares, or in proportion to --weights). RegMix, DoReMi and
          Olmix all fix the budget like this.
  "sum":  what if I add these units' data and train longer? k units -> k x one unit's tokens.
`--tokens N` fixes the budget in tokens. A budget and its weights are part of the member id.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ablate.core.errors import UsageError
from ablate.core.weights import is_uniform, parse_weights

BUDGETS = ("sum", "unit")
# The question `demo` and `search` ask first, and the proxy `search` ranks by for each, from the
# fidelity protocol (FIDELITY.md), not from the demo; search.default_method refines "sum".
DEFAULT_TRUTH = "unit"
DEFAULT_METHOD = {"unit": "merged", "sum": "own-additive"}
# No union repeats a unit more than this often: a budget past it is a typo (an extra 0 in --tokens), and
# drawing it would run for hours or out of memory before one step trains.
MAX_EPOCHS = 10_000
QUESTIONS = {
    "unit": "which composition is best at equal compute (the budget of one unit)?",
    "sum": "what if I add these units' data and train longer (k x the budget of one unit)?",
    "tokens": "which composition is best at a fixed budget of N tokens?",
}


@dataclass(frozen=True)
class Budget:
    """A union's training budget and how it is shared out among its units."""

    kind: str  # "sum" | "unit" | "tokens"
    tokens: int | None = None  # only for kind == "tokens"
    weights: tuple[float, ...] | None = None  # normalized, one per sorted unit; None = uniform

    @property
    def is_default(self) -> bool:
        """Today's union: every unit's sequences once. Its member id is unchanged by budgets."""
        return self.kind == "sum" and self.weights is None

    def label(self) -> str:
        return f"tokens={self.tokens}" if self.kind == "tokens" else self.kind

    def key(self) -> dict:
        return {"budget": self.label(), "weights": list(self.weights) if self.weights else None}


def parse_budget(budget: str | None, tokens: str | int | None, weights: str | list[float] | None,
                 unit_ids: list[str], recipe) -> Budget:
    """Validate `--budget`, `--tokens`, `--weights` (weights follow the order units were given in).

    `recipe` is the member's study.Recipe (its batch_size and seq_len set the smallest budget)."""
    if tokens is not None:
        if budget not in (None, "tokens"):
            raise UsageError("give either --budget or --tokens, not both")
        try:
            n = int(str(tokens).replace("_", ""))
        except ValueError:
            raise UsageError(f"--tokens must be a whole number of tokens, got {tokens!r}") from None
        batch = recipe.batch_size * recipe.seq_len
        if n < batch:
            raise UsageError(f"--tokens {n} is less than one batch ({recipe.batch_size} x {recipe.seq_len} = "
                             f"{batch} tokens)")
        n -= n % recipe.seq_len  # whole sequences: budgets that train on the same data share one id
        kind = "tokens"
    else:
        kind = budget or "sum"
        if kind not in BUDGETS:
            raise UsageError(f"unknown --budget {kind!r}: use sum (k x one unit's tokens), unit (one unit's "
                             f"tokens) or --tokens N")
        n = None
    w = None
    if weights is not None and weights != "":
        given = parse_weights(weights, len(unit_ids))
        by_unit = dict(zip(unit_ids, given))
        w = tuple(round(by_unit[u], 9) for u in sorted(unit_ids))
        if is_uniform(w):
            w = None  # equal weights are the uniform union: one member, one id
    return Budget(kind, n, w)


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
