"""What every proxy method sees: one Case per (mixture, eval set), and the Proxy interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ablate.core.weights import wkey

Key = tuple  # (mixture tuple, rounded weights tuple (wkey), eval set)


@dataclass(frozen=True)
class Case:
    """One mixture on one eval set, with everything a proxy may look at (never its truth)."""

    mixture: tuple[str, ...]
    weights: tuple[float, ...]
    eval_set: str
    merged: float  # log ppl of the parameter average
    task_sum: float | None  # log ppl of seed + sum of task vectors, where evaluated
    members: tuple[float, ...]  # log ppl of each unit's member alone, in mixture order
    relation: str  # "own": a unit of the eval set's domain is in the mixture; "seed": the seed
    #                trained on that domain; "other": neither
    seed: float | None = None  # log ppl of the seed itself (the union of no unit)
    ensemble: float | None = None  # log ppl of the members' per-token mixture, where scored
    scaled: dict | None = None  # {alpha: log ppl of seed + alpha * sum_i w_i (member_i - seed)}, where scored
    # per member, in mixture order, where its unit has a replicate member (scoring/drift.py): the merge's private
    # penalty A and the ensemble's mixing bonus B on this eval set, in log ppl
    drift: tuple[float, ...] | None = None
    bonus: tuple[float, ...] | None = None
    short: float | None = None  # log ppl of the mixture's short union (a fraction of the budget), where trained
    polish: float | None = None  # log ppl of the mixture's polished merge (budgets.polish_config), where trained

    @property
    def key(self) -> Key:
        return (self.mixture, wkey(self.weights), self.eval_set)

    @property
    def k(self) -> int:
        return len(self.mixture)

    @property
    def k_eff(self) -> float:
        return float(1.0 / np.sum(np.asarray(self.weights) ** 2))

    def composition(self, units: list[str], budget: str) -> list[float]:
        """Epochs of each unit's data the ground truth trains on (RegMix's mixture features)."""
        scale = len(self.mixture) if budget == "sum" else 1.0
        w = dict(zip(self.mixture, self.weights))
        return [w.get(u, 0.0) * scale for u in units]


class Proxy(Protocol):
    name: str
    fitted: bool  # learns from unions: scored out of sample only
    evaluated: bool  # builds and measures a model per mixture
    summary: str

    def predict(self, cases: list[Case], known: dict[Key, float], budget: str) -> np.ndarray: ...


def stored(cases: list[Case], field: str, name: str) -> np.ndarray:
    """An evaluated proxy's own log ppl per case (the Case field its rows fill); a case without one is an error
    naming the mixture, never a silent gap in a ranking."""
    missing = [c for c in cases if getattr(c, field) is None]
    if missing:
        c = missing[0]
        raise ValueError(f"{name} was not scored for {'+'.join(c.mixture)} on {c.eval_set}")
    return np.asarray([getattr(c, field) for c in cases])


def own_runs(cases: list[Case], field: str, what: str, setting: str) -> np.ndarray:
    """A proxy that trains a run per mixture (`short`, `polish`): each case's run's log ppl (the Case field its rows
    fill), a member alone (k = 1) being itself; a mixture without its run is an error naming it and the setting."""
    missing = [c for c in cases if c.k > 1 and getattr(c, field) is None]
    if missing:
        c = missing[0]
        raise ValueError(f"no {what} of {'+'.join(c.mixture)} on {c.eval_set}: set fidelity.{setting}")
    return np.asarray([c.merged if c.k == 1 else getattr(c, field) for c in cases])


def free_truths(cases: list[Case]) -> dict[Key, float]:
    """The union of one unit is that unit's member (at its own budget, for either question)."""
    return {c.key: c.merged for c in cases if c.k == 1}
