"""Mixture weights: parsing them, the key they are matched by, and what "uniform" means.

How to run (from Python; every command that takes `--weights` goes through here):
    from ablate.core.weights import is_uniform, parse_weights, wkey
    parse_weights("3,1", 2)          # [0.75, 0.25]
    wkey([1 / 3] * 3)                # (0.333333, 0.333333, 0.333333)
    is_uniform([0.5, 0.5])           # True

Weights are matched at 6 decimals everywhere (`wkey` here; `index.ROUND_W` in SQL), because
the same mixture reaches a table along different float paths (1/k, a normalized `--weights`,
a JSON round trip). "Uniform" uses the same tolerance, so a mixture is uniform exactly when
every weight has one key: no module can call a mixture uniform that another tells apart.
No torch here: the CLI imports this at start-up (budgets.parse_budget).
"""

from __future__ import annotations

import math

from ablate.core.errors import UsageError

DECIMALS = 6  # the precision weights are compared at (wkey, is_uniform, index.ROUND_W)


def parse_weights(raw: str | list[float] | None, k: int) -> list[float]:
    """Normalized mixture weights; refuse negative, NaN, infinite, all-zero or miscounted ones."""
    if raw is None or raw == "":
        return [1.0 / k] * k
    if isinstance(raw, str):
        try:
            values = [float(x) for x in raw.replace(" ", "").split(",")]
        except ValueError:
            raise UsageError(f"--weights must be comma-separated numbers, got {raw!r}") from None
    else:
        values = [float(x) for x in raw]
    if len(values) != k:
        raise UsageError(f"{len(values)} weights given for {k} units")
    if any(math.isnan(v) or math.isinf(v) for v in values):
        raise UsageError("weights must be finite numbers")
    if any(v < 0 for v in values):
        raise UsageError("weights must not be negative")
    total = sum(values)
    if total <= 0:
        raise UsageError("weights must not all be zero")
    return [v / total for v in values]


def wkey(weights) -> tuple[float, ...]:
    """The weights as rows and cases are matched by: rounded to DECIMALS."""
    return tuple(round(float(w), DECIMALS) for w in weights)


def is_uniform(weights) -> bool:
    """Every weight equal at DECIMALS (no weights, the seed's rows, and one weight count as uniform)."""
    return len(set(wkey(weights))) <= 1
