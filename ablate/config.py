"""Typed study config: one YAML file describes a whole study.

How to run:
    ablate config show                      # the embedded default (= configs/demo.yaml)
    ablate config show -c configs/demo.yaml --set train.lr=1e-4 --set units.unit_tokens=32768

The defaults in this module *are* the demo study, so `ablate` works with no
config file at all; `configs/demo.yaml` spells the same values out and a test
keeps the two equal. Overrides use dotted paths (`--set train.lr=1e-4`) and are
parsed as YAML scalars, so `--set units.domains=[fiction,bible]` works too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ablate.errors import UsageError


class _Strict(BaseModel):
    # Unknown keys are almost always typos in a study file: refuse them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CorpusConfig(_Strict):
    source: Literal["debian", "files"] = "debian"
    path: str = "data/corpus"  # where `corpus build` writes / where local files live
    domain_field: str = "domain"
    text_field: str = "text"
    webster_max_bytes: int = Field(4_000_000, gt=0)
    max_bytes_per_domain: Optional[int] = Field(None, gt=0)


class TokenizerConfig(_Strict):
    vocab_size: int = Field(4096, ge=300, le=65535)  # uint16 token files
    train_bytes: int = Field(3_000_000, gt=0)  # text sampled across domains to fit the BPE


class UnitsConfig(_Strict):
    domains: list[str] = ["fiction", "bible", "computing", "pydocs"]
    eval_only_domains: list[str] = ["quotes"]  # held-out domains no unit trains on
    unit_tokens: int = Field(98_304, gt=0)  # equal budget of every unit: 48 steps of 16 x 128
    units_per_domain: int = Field(1, ge=1)
    allow_partial: bool = False  # allow fewer units than asked when a domain is small
    eval_bytes: int = Field(40_000, gt=0)  # held-out text per domain, whole documents
    split_seed: int = 0

    @model_validator(mode="after")
    def _no_overlap(self):
        both = set(self.domains) & set(self.eval_only_domains)
        if both:
            raise ValueError(f"domains listed both as unit and eval-only: {sorted(both)}")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError("units.domains has duplicates")
        return self


class SeedConfig(_Strict):
    mode: Literal["train", "import"] = "train"
    import_path: Optional[str] = None  # local HF causal-LM dir when mode=import
    domains: list[str] = ["webster"]  # the seed's pretraining mix (not unit domains)
    hidden_size: int = Field(96, gt=0)
    layers: int = Field(3, gt=0)
    heads: int = Field(4, gt=0)
    intermediate_size: int = Field(256, gt=0)
    steps: int = Field(300, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(30, ge=0)
    batch_size: int = Field(16, ge=1)
    seq_len: int = Field(128, ge=8)
    init_seed: int = 0

    @model_validator(mode="after")
    def _check(self):
        if self.mode == "import" and not self.import_path:
            raise ValueError("seed.mode=import needs seed.import_path (a local HF model directory)")
        if self.hidden_size % self.heads:
            raise ValueError("seed.hidden_size must be divisible by seed.heads")
        return self


class TrainConfig(_Strict):
    """Continued pretraining of one unit (and, k times longer, of a union)."""

    seq_len: int = Field(128, ge=8)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5e-4, gt=0)  # the paper uses 6e-5 at 130M+; tiny models need more
    warmup_steps: int = Field(0, ge=0)  # the paper: no warmup
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine decays to lr * min_lr_ratio
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    epochs: int = Field(1, ge=1)
    data_seed: int = 0
    checkpoint_every: int = Field(50, ge=1)
    threads: Optional[int] = Field(None, ge=1)  # torch CPU threads; None = torch default
    # Speed knobs, not part of a member's id: torch.compile the training model (pays off on
    # GPUs; on CPU it needs a C++ compiler); TF32 tensor cores for fp32 matmuls (CUDA only).
    compile: bool = False
    tf32: bool = True


class EvalConfig(_Strict):
    seq_len: int = Field(128, ge=8)
    batch_size: int = Field(32, ge=1)


class EnergyConfig(_Strict):
    """Assumptions behind every kWh and kg CO2e the pool records."""

    backend: Literal["codecarbon", "estimate"] = "codecarbon"
    country_iso_code: str = "USA"
    grid_g_co2e_per_kwh: Optional[float] = Field(None, gt=0)  # overrides the country mix
    cpu_watts: Optional[float] = Field(None, gt=0)  # whole-CPU TDP when not in codecarbon's table
    ram_watts: Optional[float] = Field(None, ge=0)
    pue: float = Field(1.0, ge=1.0)
    measure_power_secs: float = Field(15.0, ge=15.0)
    # used by the "estimate" backend and when codecarbon cannot run:
    watts_per_cpu_thread: float = Field(10.0, gt=0)
    fallback_g_co2e_per_kwh: float = Field(369.0, gt=0)  # US average, 2023


class FidelityConfig(_Strict):
    """What `ablate fidelity` trains and scores for a study (configs/fidelity/*.yaml)."""

    # ground truths: unit = one unit's tokens (equal compute), sum = k x one unit's tokens (add data)
    budgets: list[Literal["unit", "sum"]] = ["unit", "sum"]
    # multi-unit mixtures with trained truths: "all", or a number sampled across sizes k
    truth_mixtures: int | Literal["all"] = "all"
    noise_unions: int = Field(2, ge=0)  # truths retrained with a 2nd data order, per budget: the noise floor
    proxies: list[str] = ["merged", "task-sum", "additive", "own-additive", "calibrated", "regression"]
    sample_seed: int = 0


class StudyConfig(_Strict):
    name: str = "demo"
    pool: str = "pool"
    corpus: CorpusConfig = CorpusConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    units: UnitsConfig = UnitsConfig()
    seed: SeedConfig = SeedConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    energy: EnergyConfig = EnergyConfig()
    sweep_jobs: int = Field(1, ge=1)  # joblib processes for `ablate sweep`
    # Loading a member always checks its size and safetensors header; this adds the
    # full sha256 (slower on big models; `ablate pool verify` always does it).
    verify_hash: bool = False
    # unions the demo trains: every multi-unit mixture at equal compute (budget unit, one unit's cost
    # each), and the add-data truth (budget sum, k units' cost each) for pairs only, to stay under 10 min
    demo_unions: Literal["all", "pairs", "none"] = "all"
    demo_add_data_unions: Literal["all", "pairs", "none"] = "pairs"
    demo_noise_unions: int = Field(1, ge=0)  # unions per truth the demo retrains with a 2nd data order (noise floor)
    demo_search_grid: list[float] = [1.0, 2.0]  # weights grid of the demo's mixture search
    fidelity: FidelityConfig = FidelityConfig()

    @model_validator(mode="after")
    def _seed_domains(self):
        clash = set(self.seed.domains) & set(self.units.domains)
        if clash and self.seed.mode == "train":
            raise ValueError(f"seed.domains overlap units.domains {sorted(clash)}: the seed must not see unit data")
        return self

    @property
    def eval_domains(self) -> list[str]:
        return list(self.units.domains) + list(self.units.eval_only_domains)

    @property
    def all_domains(self) -> list[str]:
        seed = self.seed.domains if self.seed.mode == "train" else []
        return sorted(set(self.eval_domains) | set(seed))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _set_path(tree: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        if not isinstance(node.get(key, {}), dict):
            raise UsageError(f"--set {dotted}: '{key}' is not a section")
        node = node.setdefault(key, {})
    try:
        node[keys[-1]] = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        node[keys[-1]] = raw


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, str]]:
    pairs = []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects key=value, got {item!r}")
        pairs.append((key.strip(), value))
    return pairs


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> StudyConfig:
    """Load a study from YAML (or the embedded default) and apply `key=value` overrides."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read config {path}: {exc}") from None
        try:
            tree = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise UsageError(f"invalid YAML in {path}{where}: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(tree, dict):
            raise UsageError(f"{path}: a study config must be a mapping, got {type(tree).__name__}")
    for key, value in parse_overrides(overrides):
        _set_path(tree, key, value)
    try:
        return StudyConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        src = f" in {path}" if path else ""
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise UsageError(f"invalid config{src}: {where}: {err['msg']}{more}") from None


def config_hash(section: BaseModel | dict) -> str:
    """Stable short hash of a config section; ids of pool members derive from it."""
    data = section.model_dump(mode="json") if isinstance(section, BaseModel) else section
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
