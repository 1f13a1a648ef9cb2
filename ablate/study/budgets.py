"""Ground truths named: the two questions, their budgets (how much a union trains on, in which proportions).

How to run:
    ablate train-mixture fiction-00 bible-00 --budget unit             # equal compute: one unit's tokens
    ablate train-mixture fiction-00 bible-00 --budget sum              # add data: k x one unit's tokens
    ablate train-mixture fiction-00 bible-00 --tokens 65536 --weights 3,1

A data ablation asks one of two questions, each with its own ground truth (ablate/train/ trains
them and ablate/train/truths.py draws their data; this module names them and their budgets):
  "unit": which composition is best at equal compute? The tokens of one unit, shared out
          among the units (equal shares, or in proportion to --weights). RegMix, DoReMi and
          Olmix all fix the budget like this.
  "sum":  what if I add these units' data and train longer? k units -> k x one unit's tokens.
`--tokens N` fixes the budget in tokens. A budget and its weights are part of the member id.
"""

from __future__ import annotations

from dataclasses import dataclass

from ablate.core.errors import UsageError
from ablate.core.weights import is_uniform, parse_weights
from ablate.data.units import seed_domains

BUDGETS = ("sum", "unit")
# The question `demo` and `search` ask first, and the proxy `search` ranks by for each, from the
# fidelity protocol (FIDELITY.md), not from the demo; optimize/defaults.py refines both per kind of target.
DEFAULT_TRUTH = "unit"
DEFAULT_METHOD = {"unit": "merged", "sum": "own-additive"}

TARGET_KINDS = ("covered", "seed-known", "eval-only")


def target_kind(eval_set: str, unit_domains, seed_known=()) -> str:
    """`covered`: some unit trains on the eval set's domain; `seed-known`: none does, but the seed trained on it
    (its own domains, general text for an imported seed: what a user protects when adding domain data, and
    where every proxy is weakest, because a merge forgets less than a real union); `eval-only`: new to the seed
    too (a held-out quality set, a downstream suite, an eval file nobody trained on)."""
    if eval_set in unit_domains:
        return "covered"
    return "seed-known" if eval_set in seed_known else "eval-only"


def seed_known(cfg, eval_names, pool=None) -> frozenset:
    """The eval sets of `eval_names` the seed knows (`seed.knows`); `seed.domains: auto` on your own corpus is
    read from the pool, where `units split` resolved it."""
    if cfg.seed.knows != "auto":
        return frozenset(n for n in eval_names if n in cfg.seed.knows)
    if cfg.seed.mode == "import":  # a pretrained model: assume it knows general text, every eval set included
        return frozenset(n for n in eval_names if n not in cfg.units.domains)
    if isinstance(cfg.seed.domains, list):
        domains = cfg.seed.domains
    else:
        domains = seed_domains(cfg, pool) if pool is not None else []
    return frozenset(n for n in eval_names if n in domains and n not in cfg.units.domains)


def fraction_budget(cfg, fraction: float) -> str | None:
    """The budget label of `fraction` of one unit's tokens (whole sequences, as parse_budget rounds `--tokens`),
    or None for 0."""
    if not fraction:
        return None
    tokens = int(fraction * cfg.units.unit_tokens)
    return f"tokens={tokens - tokens % cfg.train.seq_len}"


def short_budget(cfg) -> str | None:
    """The budget label of a fidelity study's short unions (`fidelity.short_unions` of one unit's tokens), or None
    when it trains none."""
    return fraction_budget(cfg, cfg.fidelity.short_unions)


def polish_budget(cfg) -> str | None:
    """The budget label of a fidelity study's polished merges (`fidelity.polish_unions` of one unit's tokens), or
    None when it trains none."""
    return fraction_budget(cfg, cfg.fidelity.polish_unions)


def polish_config(cfg):
    """The study as its polished merges train: each starts from the merge of its units' members (train.start =
    merge) and trains on the mixture with the full batch, so `fidelity.polish_unions` of a union's tokens is that
    fraction of its steps, the learning-rate schedule compressed into them. Why from the merge: a merge has the
    members' shared part and lacks what training on the mixture itself adds; a short run from there adds it at a
    quarter of a union per data order (bench/merge_polish.py: on the protocol's seed-known sets the mean of two
    orders picked within 0.5 % of the best in every pair of three orders; short unions from the seed, at the same
    half a union, strayed to 3.1 %)."""
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"start": "merge"})})


def short_config(cfg):
    """The study as its short unions train: the same steps and learning-rate schedule as a full union, on a batch
    `fidelity.short_unions` the size (so that fraction of the tokens). Why not fewer steps on the full batch: the
    protocol measured both at half the tokens, and forgetting follows the steps a run takes, not the tokens it
    sees. Half the steps ranked the seed's own domains at median Spearman 0.80 (the merge: 0.83); all the steps on
    half the batch at 0.90 (docs/fidelity.md)."""
    batch = max(1, round(cfg.train.batch_size * cfg.fidelity.short_unions))
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"batch_size": batch})})


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

    `recipe` is the member's context.Recipe (its batch_size and seq_len set the smallest budget)."""
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
