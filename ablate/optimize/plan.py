"""What one optimization is asked, as a typed value: the objective, the units, the budget the weights are for,
its repetition caps, the route, and the row's id.

How to run (from Python; optimization.plan_optimization builds it from the command line's flags):
    plan = plan_optimization(cfg, pool, ["quotes"], None, "mean", None, None, None)
    plan.budget.tokens, plan.budget.label           # 4096, "unit"
    ensemble = dataclasses.replace(plan, route="ensemble", row_id=None)    # another question, another row

A plan is frozen: a variant is `dataclasses.replace`, never an edit. Its `row_id` hashes the plan
(optimization.optimization_id), so a variant that changes what is hashed must drop it (row_id=None), and
run_optimization names it again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ablate.optimize.objectives import Objective


@dataclass(frozen=True)
class WeightsBudget:
    """The training budget the weights are for: one unit's tokens (`--tokens` not given: equal compute) or
    `--tokens N`. One source for the row's label, the token count and what training is asked for."""

    tokens: int  # the budget in tokens: what the recommended tokens sum to
    per_unit: bool = True  # True: one unit's tokens (`unit`); False: `--tokens` gave it

    @classmethod
    def of(cls, unit_tokens: list[int], tokens: int | None) -> WeightsBudget:
        """From `--tokens` (None: one unit's tokens, the first unit's)."""
        return cls(unit_tokens[0], True) if tokens is None else cls(tokens, False)

    @property
    def label(self) -> str:
        """The budget as union ids and rows name it: "unit" or "tokens=N"."""
        return "unit" if self.per_unit else f"tokens={self.tokens}"

    @property
    def option(self) -> int | None:
        """The `--tokens` value it came from (None: one unit's)."""
        return None if self.per_unit else self.tokens

    def train_args(self) -> dict:
        """train.loop.train_member's budget arguments for a union at this budget."""
        return {"budget": "unit"} if self.per_unit else {"tokens": self.tokens}


@dataclass(frozen=True, eq=False)  # eq=False: caps is an array; two plans are the same question when ids are
class Plan:
    """One optimization, checked before any work (optimization.plan_optimization)."""

    objective: Objective
    units: list[str]
    unit_tokens: list[int]  # each unit's tokens (its data), for the epochs of a weights vector
    budget: WeightsBudget
    caps: np.ndarray  # each unit's largest weight at this budget (simplex.repetition_caps)
    route: str = "merged"  # a name in optimize/routes.py
    domains: list[str] | None = None  # each unit's domain (None: run_optimization reads them)
    unions: list | None = None  # the regression route's training set (None: every trained union)
    calibration: list | None = None  # the unions the proxy error is measured on (None: every trained one)
    # the route whose top candidate joins the shortlist at #2 (defaults.PARTNER_ROUTE: set when the route was chosen
    # by the kind of target), and that candidate once computed: ((source, weights),), run_optimization fills it
    partner: str | None = None
    shortlist: tuple = ()
    row_id: str | None = None  # the row's id (None: run_optimization computes it)
