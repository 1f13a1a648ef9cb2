"""The study context and member identity: which seed, which eval sets, which member is whose.

How to run (from Python; every scoring command loads one of these first):
    from ablate.study.context import load_study, member_id
    study = load_study(cfg, pool, ["fortunes"])   # seed, eval tokens, byte table, device
    study.unit_member("fortunes-00")               # that unit's member id, or "run train-partition"

A member's id is a hash of everything that determines its weights (seed, unit data, recipe (with
train.optimizer and train.compile where set), replicate, budget, dropout), so training asks `member_id` whether the member already exists and
scoring asks it which member a unit is: both sides use this one function, never a copy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ablate.core.config import StudyConfig, config_hash
from ablate.core.errors import UsageError
from ablate.data.evalsets import check_source
from ablate.data.tasks import TaskSet, load_task
from ablate.data.units import (
    eval_sets,
    load_eval_tokens,
    load_tokenizer,
    study_tokenizer,
    token_byte_lengths,
    unit_meta,
)
from ablate.models.device import eval_precision, resolve_device
from ablate.models.model import dropout_of, find_seed, seed_config, without_dropout
from ablate.models.threads import claim as claim_threads
from ablate.store.index import recipe_id
from ablate.store.pool import Pool, check_name
from ablate.study.budgets import Budget, polish_budget, polish_config, short_budget, short_config


@dataclass
class Recipe:
    """Everything that determines a training run besides the data and the start weights."""

    seq_len: int
    batch_size: int
    lr: float
    warmup_steps: int
    min_lr_ratio: float
    weight_decay: float
    beta1: float
    beta2: float
    grad_clip: float
    epochs: int
    data_seed: int
    optimizer: str = "auto"  # AdamW's implementation (train.optimizer)
    compile: bool = False  # torch.compile (train.compile): fused kernels sum in another order, other floats
    start: str = "seed"  # where a union starts (train.start): the seed, or the merge of its units' members

    def key(self) -> dict:
        """The recipe as ids hash it and sidecars store it: the optimizer only when it is not auto and compile
        only when on, so members trained before either knob existed (or with neither) keep their ids (and their
        recipe_id)."""
        key = asdict(self)
        if key["optimizer"] == "auto":
            del key["optimizer"]
        if not key["compile"]:
            del key["compile"]
        if key["start"] == "seed":
            del key["start"]
        return key


def member_recipe(cfg: StudyConfig, replicate: int = 0) -> Recipe:
    t = cfg.train
    return Recipe(t.seq_len, t.batch_size, t.lr, t.warmup_steps, t.min_lr_ratio, t.weight_decay, t.beta1,
                  t.beta2, t.grad_clip, t.epochs, t.data_seed + 1000 * replicate, t.optimizer, t.compile, t.start)


def short_unions(cfg: StudyConfig) -> tuple[str, str] | None:
    """(budget label, recipe id) of a fidelity study's short unions, or None where it trains none. The label alone
    also matches unions of as many tokens on the full batch (the protocol's short unions before short_config)."""
    label = short_budget(cfg)
    return None if label is None else (label, recipe_id(member_recipe(short_config(cfg)).key(), 0))


def polish_unions(cfg: StudyConfig) -> tuple[str, str, int] | None:
    """(budget label, recipe id, data orders) of a fidelity study's polished merges (budgets.polish_config), or None
    where it trains none. The recipe id holds train.start = merge, so no union from the seed is ever read as one."""
    label = polish_budget(cfg)
    return None if label is None else (label, recipe_id(member_recipe(polish_config(cfg)).key(), 0),
                                       cfg.fidelity.polish_orders)


def training_dropout(pool: Pool, seed_id: str, setting: str) -> tuple[object, dict[str, float]]:
    """The seed's HF config as members of it train (train.dropout: keep | zero) and its dropout by key."""
    config = seed_config(pool, seed_id)
    if setting == "zero":
        config = without_dropout(config)
    return config, dropout_of(config)


def study_recipe_id(cfg: StudyConfig) -> str:
    """The recipe key (models.recipe_id) of the members this config trains and merges: what cost views and
    the report price, so members another recipe left in the pool are not counted."""
    return recipe_id(member_recipe(cfg).key(), 0)


def run_hash(seed_id: str, unit_metas: list[dict], recipe: Recipe, replicate: int,
             budget: Budget | None = None, dropout: dict[str, float] | None = None) -> str:
    """Hash of everything that determines a member's weights (seed, data, recipe, replicate, budget,
    the dropout it trains with).

    The default budget (every unit once) adds nothing to the key, so members trained before
    budgets existed keep their ids; no dropout (every seed trained here; train.dropout=zero) adds
    nothing either, so members trained before dropout was counted keep theirs. The setting itself
    stays out: `zero` on a seed without dropout trains the same weights as `keep`."""
    key = {"seed": seed_id, "data": sorted(m["data_sha256"] for m in unit_metas),
           "recipe": recipe.key(), "replicate": replicate}
    if budget is not None and not budget.is_default:
        key |= budget.key()
    if dropout and any(dropout.values()):
        key |= {"dropout": dropout}
    return config_hash(key)


def member_id(seed_id: str, unit_metas: list[dict], recipe: Recipe, replicate: int,
              budget: Budget | None = None, dropout: dict[str, float] | None = None) -> str:
    key = run_hash(seed_id, unit_metas, recipe, replicate, budget, dropout)
    if len(unit_metas) == 1 and (budget is None or budget.is_default):
        return f"unit-{unit_metas[0]['unit_id']}-{key[:10]}"
    if budget is None or budget.is_default:
        return f"union-k{len(unit_metas)}-{key[:10]}"
    return f"union-k{len(unit_metas)}-{budget.kind}-{key[:10]}"


def normalize_units(unit_ids: list[str]) -> list[str]:
    if not unit_ids:
        raise UsageError("name at least one unit")
    for u in unit_ids:
        check_name(u, "unit id")
    dup = sorted({u for u in unit_ids if unit_ids.count(u) > 1})
    if dup:
        raise UsageError(f"unit listed twice: {', '.join(dup)}")
    return sorted(unit_ids)


@dataclass
class Study:
    """What every scoring step needs, loaded once: seed, eval sets, byte table."""

    cfg: StudyConfig
    pool: Pool
    seed: dict
    evals: list[dict]
    eval_tokens: dict[str, np.ndarray] = field(default_factory=dict)
    byte_len: np.ndarray | None = None
    tasks: dict[str, TaskSet] = field(default_factory=dict)  # the task eval sets among `evals`, loaded
    _unions: list[dict] | None = None  # union sidecars, read once
    _dropout: dict[str, float] | None = None  # the dropout unit members train with (training_dropout)
    device: torch.device = torch.device("cpu")  # where models are built and evaluated (cfg.device)
    precision: str = "fp32"  # what evaluation runs in there (ablate/models/device.py)

    def unit_member(self, unit_id: str, required: bool = True, replicate: int = 0) -> str | None:
        """The unit's member for this seed and recipe (`replicate` r: the run with data order r)."""
        if self._dropout is None:  # the seed's config, read once
            self._dropout = training_dropout(self.pool, self.seed["model_id"], self.cfg.train.dropout)[1]
        mid = member_id(self.seed["model_id"], [unit_meta(self.pool, unit_id)], member_recipe(self.cfg, replicate),
                        replicate, dropout=self._dropout)
        if not self.pool.has_member(mid):
            if required:
                if replicate:
                    raise UsageError(f"unit {unit_id} has no replicate {replicate} member: run `ablate "
                                     f"train-partition {unit_id} --replicate {replicate}`")
                raise UsageError(f"unit {unit_id} has no trained member for this seed and recipe: "
                                 f"run `ablate train-partition {unit_id}`")
            return None
        return mid

    def truths(self, unit_ids: list[str]) -> list[dict]:
        """Sidecars of every trained union of exactly these units: any budget, weights, replicate."""
        if self._unions is None:
            self._unions = [m for m in self.pool.iter_metas("union") if m["seed_id"] == self.seed["model_id"]]
        key = sorted(unit_ids)
        return [m for m in self._unions if m["units"] == key]


@lru_cache(maxsize=4)
def byte_lengths(tok_dir: Path, tok_id: str) -> np.ndarray:
    """The bytes each token of the pool's tokenizer stands for (read-only), once per process and tokenizer id:
    loading a tokenizer and walking its vocabulary costs about 0.3 s, and a command loads a study per member it
    trains or scores (13 times in a small demo). The id (data/tokenizer_id.py) changes with what the tokenizer
    does, so a tokenizer staged again by `units split --force` is read again."""
    lengths = token_byte_lengths(load_tokenizer(tok_dir))
    lengths.setflags(write=False)  # shared by every study of this process
    return lengths


def load_study(cfg: StudyConfig, pool: Pool, eval_names: list[str] | None = None, device=None) -> Study:
    """`device` overrides cfg.device (a sweep worker's own GPU)."""
    device = resolve_device(cfg) if device is None else torch.device(device)  # first: a bad device is exit 2
    claim_threads(cfg.train.threads)  # evaluation's share of the cores (ablate/models/threads.py)
    seed = find_seed(pool)
    evals = eval_sets(pool, eval_names)
    for ev in evals:  # an own eval or task file changed since `units split`: refused before anything is scored
        check_source(ev, cfg.eval_sets.get(ev["domain"]))
    tok_dir, tok_id = study_tokenizer(pool)
    study = Study(cfg, pool, seed, evals, device=device, precision=eval_precision(device, cfg.eval.precision))
    study.byte_len = byte_lengths(tok_dir, tok_id)
    for ev in evals:
        if ev.get("task"):  # a task's windows are its examples (ablate/data/tasks.py): no stream to cut
            study.tasks[ev["domain"]] = load_task(pool, ev, study.byte_len)
            study.eval_tokens[ev["domain"]] = study.tasks[ev["domain"]].tokens
            continue
        tokens = load_eval_tokens(pool, ev)
        if tokens.size < cfg.eval.seq_len:
            raise UsageError(f"eval set {ev['domain']} has {tokens.size} tokens, shorter than one window "
                             f"(eval.seq_len={cfg.eval.seq_len})")
        study.eval_tokens[ev["domain"]] = tokens
    return study
