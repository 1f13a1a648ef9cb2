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
from typing import Literal, Optional, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ablate.core.errors import UsageError


class _Strict(BaseModel):
    # Unknown keys are almost always typos in a study file: refuse them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _comma_lists(cls, data):
        # `--set units.domains=a,b,c` arrives as the string "a,b,c": a list field takes it as a comma list
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            value = data.get(name)
            if isinstance(value, str) and value != "auto" and _is_list(field.annotation):
                data = {**data, name: [v.strip() for v in value.split(",") if v.strip()]}
            elif value is None and name in data and get_origin(field.annotation) is list:
                data = {**data, name: []}  # `--set units.eval_only_domains=`: none
        return data


def _is_list(annotation) -> bool:
    return get_origin(annotation) is list or any(get_origin(a) is list for a in get_args(annotation))


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
    # The seed's pretraining mix, never unit domains. auto: webster for the Debian corpus; for your own
    # files, every corpus domain that is neither a unit nor an eval-only domain (or import a seed).
    domains: list[str] | Literal["auto"] = "auto"
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


DEVICE_SPEC = r"auto|cpu|cuda(:\d+)?"  # StudyConfig.device


class EvalConfig(_Strict):
    seq_len: int = Field(128, ge=8)
    batch_size: int = Field(32, ge=1)
    # on CUDA: bf16 autocast or plain fp32 (TF32 off); the CPU always evaluates in fp32. Recorded per row.
    precision: Literal["bf16", "fp32"] = "bf16"
    # sweep/search: merged models evaluated together in one pass (ablate/scoring/batched.py); None = as many as
    # memory allows up to 8 on a GPU, 1 on a CPU (measured: on CPU the fused loss is the win, not M)
    models_per_pass: Optional[int] = Field(None, ge=1, le=64)
    # `--screen` (ablate/scoring/screen.py): each round evaluates every surviving candidate on a longer prefix of
    # the eval set's shuffled windows and drops those significantly worse than each of the
    # `screen_keep` best, at this level for the whole race
    screen_confidence: float = Field(0.95, gt=0.0, lt=1.0)
    screen_tokens: int = Field(1024, ge=1)  # first round's prefix (>= 2 windows); each later round x screen_growth
    screen_growth: int = Field(2, ge=2)  # 1024 x 2: chosen leaving each study out (bench/bench_screen.py)
    screen_keep: int = Field(3, ge=1)  # the top `screen_keep` always race to the full set


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


class EvalFileConfig(_Strict):
    """An eval set from the user's own file (Paloma-style JSONL, JSON, Parquet or text)."""

    path: str
    text_field: str = "text"
    max_bytes: Optional[int] = Field(None, gt=0)  # whole documents up to this many bytes; None = the whole file

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):  # `eval_sets: {heldout: my.jsonl}` = a path with the defaults
        return {"path": data} if isinstance(data, str) else data


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
    # named eval sets from files, beside the held-out slices of corpus domains (`ablate units split` adds them)
    eval_sets: dict[str, EvalFileConfig] = {}
    # where every stage trains, merges and evaluates: auto (cuda if a GPU is visible, else cpu), cpu, cuda,
    # cuda:N; sweep workers take one GPU each (ablate/models/device.py)
    device: str = "auto"
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

    @field_validator("device")
    @classmethod
    def _device_spec(cls, value: str) -> str:
        import re

        # the syntax only: whether that GPU exists is asked where it is used (ablate/models/device.py)
        if not re.fullmatch(DEVICE_SPEC, value):
            raise ValueError(f"{value!r} is not a device: use auto, cpu, cuda or cuda:N (N a GPU index)")
        return value

    @model_validator(mode="after")
    def _seed_domains(self):
        if self.seed.domains == "auto" and self.corpus.source == "debian":
            self.seed.domains = ["webster"]  # resolved here so the demo's seed id stays what it was
        if self.seed.domains == "auto":
            return self  # resolved from the corpus at `units split` (corpus.resolve_seed_domains)
        clash = set(self.seed.domains) & set(self.units.domains)
        if clash and self.seed.mode == "train":
            raise ValueError(f"seed.domains overlap units.domains {sorted(clash)}: the seed must not see unit data")
        return self

    @model_validator(mode="after")
    def _eval_set_names(self):
        import re

        for name in self.eval_sets:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise ValueError(f"eval set name {name!r}: use letters, digits, '.', '_' or '-'")
        clash = set(self.eval_sets) & set(self.eval_domains)
        if clash:
            raise ValueError(f"eval_sets {sorted(clash)} clash with corpus domains of the same name")
        return self

    @property
    def eval_domains(self) -> list[str]:
        return list(self.units.domains) + list(self.units.eval_only_domains)

    @property
    def all_domains(self) -> list[str]:
        seed = self.seed.domains if self.seed.mode == "train" and self.seed.domains != "auto" else []
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


# Settings that name files: relative values in a config file are relative to that file.
PATH_KEYS = (("pool",), ("corpus", "path"), ("seed", "import_path"))


def _resolve_paths(tree: dict, base: Path) -> None:
    """Make the config file's relative paths absolute against its folder (not the working directory)."""
    def fix(node, key) -> None:
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            node[key] = str((base / value).resolve())

    for *parents, key in PATH_KEYS:
        node = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        fix(node, key)
    sets = tree.get("eval_sets")
    for name, entry in (sets.items() if isinstance(sets, dict) else ()):
        if isinstance(entry, str):  # the shorthand `name: path`
            fix(sets, name)
        else:
            fix(entry, "path")


def _read_tree(path: Path) -> dict:
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
    return tree


def known_keys(model: type[BaseModel] = None, prefix: str = "") -> list[str]:
    """Every dotted setting of a study (`train.lr`, ...): for suggestions on a typo."""
    model = model or StudyConfig
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += known_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


# names other tools use for a setting ablate spells differently
ALIASES = {"learning_rate": "lr", "max_steps": "steps", "per_device_train_batch_size": "batch_size",
           "block_size": "seq_len", "max_seq_length": "seq_len", "vocab": "vocab_size"}


def _suggest(dotted: str) -> str:
    import difflib

    keys = known_keys()
    section, _, field = dotted.rpartition(".")
    fields = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == section}
    guess = ALIASES.get(field)
    close = [fields[guess]] if guess in fields else difflib.get_close_matches(dotted, keys, n=1, cutoff=0.6)
    if not close:  # same section, nearest field name
        near = difflib.get_close_matches(field, list(fields), n=1, cutoff=0.5)
        close = [fields[near[0]]] if near else []
    return f" (did you mean {close[0]}?)" if close else ""


def _describe(err: dict, overridden: dict[str, str], path: Path | None) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "config"
    # blame the command line when the value came from --set, the file otherwise
    blamed = next((k for k in overridden if where == k or k.startswith(where + ".") or where.startswith(k + ".")),
                  None)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown setting" + _suggest(blamed if blamed and blamed.startswith(where) else where)
    if blamed:
        return f"--set {blamed}={overridden[blamed]}: {msg}"
    return (f"{where}: {msg}" if err["loc"] else msg) + (f" (in {path})" if path else "")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> StudyConfig:
    """Load a study from YAML (or the embedded default) and apply `key=value` overrides.

    Relative paths in the file are relative to the file; those given with --set, to the
    working directory (where the user typed them)."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        tree = _read_tree(path)
        _resolve_paths(tree, path.resolve().parent)
    pairs = parse_overrides(overrides)
    for key, value in pairs:
        _set_path(tree, key, value)
    try:
        return StudyConfig.model_validate(tree)
    except ValidationError as exc:
        overridden = dict(pairs)
        problems = "; ".join(_describe(e, overridden, path) for e in exc.errors())
        raise UsageError(f"invalid config: {problems}") from None


def config_hash(section: BaseModel | dict) -> str:
    """Stable short hash of a config section; ids of pool members derive from it."""
    data = section.model_dump(mode="json") if isinstance(section, BaseModel) else section
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
