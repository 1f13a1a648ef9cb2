"""Objectives over eval sets: what "best mixture" means for a target suite, one definition for every ranker.

How to run (the options every ranking command shares: search, sweep --target, optimize):
    ablate search   --target quotes                           # one eval set
    ablate optimize --target fiction,bible --target quotes    # the mean of three (comma lists and/or repeated)
    ablate optimize --target fiction,bible --target-weights 3,1   # a weighted mean (or `tokens`: by eval tokens)
    ablate optimize --target fiction,bible,quotes --objective worst   # the worst set's change vs uniform
    ablate optimize --target quotes --max-loss fiction:2      # best on quotes, fiction at most 2 % worse than uniform

Every value is in log perplexity (nats per predicted token), the scale a mixture law is linear in:
- `mean`: sum_s a_s L_s, a_s equal (default), by eval tokens (`tokens`), or the user's (normalized);
- `worst`: max_s (L_s - U_s), U_s the uniform mixture of the same units on the same tokens: eval sets of
  different difficulty are compared by how much the mixture changes them, not by their raw perplexity
  (a raw max would only ever optimize the hardest set; DoReMi's excess loss has the same reason);
- `--max-loss B:x` adds a guard: L_B - U_B <= ln(1 + x/100). A ranker puts guarded-out candidates last;
  an optimizer adds GUARD_PENALTY per nat of violation (an exact penalty: large enough that no gain on
  the targets pays for it) and says whether the guard held on the windows it did not see.
A repeated or unknown eval set, target weights that do not parse, a guard naming no eval set or one of
the targets, and a guard below 0 % are refused (exit 2), never silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ablate.core.errors import UsageError, split_names, unknown_name

KINDS = ("mean", "worst")
GUARD_PENALTY = 20.0  # nats of objective per nat of guard violation


@dataclass(frozen=True)
class Objective:
    kind: str                              # "mean" | "worst"
    targets: tuple[str, ...]
    target_weights: tuple[float, ...] | str | None = None   # per target (normalized), "tokens", None = equal
    guards: tuple[tuple[str, float], ...] = ()               # (eval set, max % loss vs the uniform mixture)

    @property
    def eval_sets(self) -> list[str]:
        """Every eval set the objective reads: the targets, then the guarded sets."""
        return list(self.targets) + [g for g, _ in self.guards]

    @property
    def needs_reference(self) -> bool:
        """Whether values are relative to the uniform mixture (worst case, guards)."""
        return self.kind == "worst" or bool(self.guards)

    def describe(self) -> str:
        """The objective as stored with every search and optimization row, e.g. `mean(a,b; w=3:1) | b<=+2%`."""
        inner = ",".join(self.targets)
        if self.kind == "mean" and isinstance(self.target_weights, tuple):
            inner += "; w=" + ":".join(f"{w:g}" for w in self.target_weights)
        elif self.kind == "mean" and self.target_weights == "tokens":
            inner += "; w=tokens"
        text = f"{self.kind}({inner})" if len(self.targets) > 1 or self.kind == "worst" else self.targets[0]
        return text + "".join(f" | {g}<=+{x:g}%" for g, x in self.guards)

    def coefficients(self, tokens: dict[str, int] | None = None) -> dict[str, float]:
        """The mean's a_s (summing to 1)."""
        if isinstance(self.target_weights, tuple):
            raw = dict(zip(self.targets, self.target_weights))
        elif self.target_weights == "tokens":
            if tokens is None:
                raise UsageError("--target-weights tokens needs the eval sets' token counts")
            raw = {t: float(tokens[t]) for t in self.targets}
        else:
            raw = {t: 1.0 for t in self.targets}
        total = sum(raw.values())
        return {t: v / total for t, v in raw.items()}

    def value(self, logppl: dict[str, float], reference: dict[str, float] | None = None,
              tokens: dict[str, int] | None = None) -> float:
        """The objective (lower is better) from per-eval-set log perplexities; `reference`: the uniform
        mixture's, needed by `worst` and guards."""
        return self.value_and_slopes(logppl, reference, tokens)[0]

    def value_and_slopes(self, logppl: dict[str, float], reference: dict[str, float] | None = None,
                         tokens: dict[str, int] | None = None) -> tuple[float, dict[str, float]]:
        """(value, dJ/dL_s for every eval set): the chain rule's first link for a gradient optimizer
        (a subgradient at the max's kinks and at a guard's edge)."""
        if self.needs_reference and reference is None:
            raise UsageError(f"objective {self.describe()} needs the uniform mixture's values")
        slopes = {s: 0.0 for s in self.eval_sets}
        if self.kind == "mean":
            coef = self.coefficients(tokens)
            value = sum(coef[t] * logppl[t] for t in self.targets)
            slopes.update(coef)
        else:
            worst = max(self.targets, key=lambda t: logppl[t] - reference[t])
            value = logppl[worst] - reference[worst]
            slopes[worst] = 1.0
        for g, pct in self.guards:
            excess = logppl[g] - reference[g] - math.log1p(pct / 100)
            if excess > 0:
                value += GUARD_PENALTY * excess
                slopes[g] += GUARD_PENALTY
        return value, slopes

    def guards_held(self, logppl: dict[str, float], reference: dict[str, float]) -> bool:
        return all(logppl[g] - reference[g] <= math.log1p(pct / 100) + 1e-12 for g, pct in self.guards)


def parse_objective(targets: list[str] | None, known: list[str], *, kind: str = "mean",
                    target_weights: str | None = None, max_loss: list[str] | None = None) -> Objective:
    """The objective from the command line's words, checked against the pool's eval sets (`known`)."""
    names = split_names(targets)
    if not names:
        raise UsageError("name at least one eval set with --target (e.g. --target quotes or --target a,b)")
    _check_sets(names, known, "--target")
    if kind not in KINDS:
        raise UsageError(f"--objective must be one of {', '.join(KINDS)}, not {kind!r}")
    guards = tuple(_parse_guard(g, known, names) for g in max_loss or [])
    _check_sets([g for g, _ in guards], known, "--max-loss")
    return Objective(kind, tuple(names), _parse_target_weights(target_weights, names, kind), guards)


def _check_sets(names: list[str], known: list[str], option: str) -> None:
    for name in names:
        if name not in known:
            raise unknown_name("eval set", name, known, where=f"{option}: ")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"{option}: eval set {twice[0]!r} named twice")


def _parse_target_weights(raw: str | None, names: list[str], kind: str):
    if raw is None:
        return None
    if kind != "mean":
        raise UsageError("--target-weights weights a mean: drop it or use --objective mean")
    if raw.strip() == "tokens":
        return "tokens"
    try:
        values = tuple(float(x) for x in raw.split(","))
    except ValueError:
        values = ()
    if len(values) != len(names) or any(not math.isfinite(v) or v < 0 for v in values) or not sum(values):
        raise UsageError(f"--target-weights must be {len(names)} non-negative numbers, one per target "
                         f"({', '.join(names)}), or `tokens` (got {raw!r})")
    return values


def _parse_guard(raw: str, known: list[str], targets: list[str]) -> tuple[str, float]:
    name, sep, pct = raw.rpartition(":")
    name = name.strip()
    if not sep or not name:
        raise UsageError(f"--max-loss must be EVAL_SET:PERCENT, e.g. fiction:2 (got {raw!r})")
    try:
        value = float(pct.strip().rstrip("%"))
    except ValueError:
        raise UsageError(f"--max-loss must be EVAL_SET:PERCENT, e.g. fiction:2 (got {raw!r})") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"--max-loss {raw!r}: the percentage must be a number >= 0")
    if name in targets:
        raise UsageError(f"--max-loss {raw!r}: {name!r} is a target; a guard protects another eval set")
    if name not in known:
        raise unknown_name("eval set", name, known, where="--max-loss: ")
    return name, value
