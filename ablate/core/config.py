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
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ablate.core.errors import UsageError
from ablate.core.sections import (  # noqa: F401  (re-exported)
    DEVICE_SPEC,
    CorpusConfig,
    EnergyConfig,
    EvalConfig,
    EvalFileConfig,
    FidelityConfig,
    OptimizeConfig,
    SeedConfig,
    Strict,
    TokenizerConfig,
    TrainConfig,
    UnitsConfig,
)
from ablate.core.textfile import read_text


class StudyConfig(Strict):
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
    # a multiple-choice task the demo builds offline (ablate/data/task_builders.py) and scores as an eval set beside
    # the text ones; None: text only. Unnamed, it is the demo's only on the Debian corpus (_own_study_no_demo_task)
    demo_task: Optional[Literal["webster-definition", "fortune-ending"]] = "webster-definition"
    fidelity: FidelityConfig = FidelityConfig()
    optimize: OptimizeConfig = OptimizeConfig()

    @model_validator(mode="before")
    @classmethod
    def _own_study_no_demo_task(cls, data):
        # a study on the user's own files gets only what its config names: the demo's dictionary task would be
        # built next to their corpus and scored as one of their eval sets. The default stays the demo's
        # (configs/demo.yaml spells it out), so a config written by `config show --set corpus.source=files` says null.
        if isinstance(data, dict) and "demo_task" not in data:
            corpus = data.get("corpus") or {}
            source = corpus.get("source") if isinstance(corpus, dict) else getattr(corpus, "source", None)
            if (source or CorpusConfig().source) != "debian":
                data = {**data, "demo_task": None}
        return data

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
            # resolved here, so the seed's id is that of the list written out. Every domain of the corpus: a seed
            # on the dictionary alone was worse than the eval sets' own token frequencies on all of them
            self.seed.domains = ["webster", *self.units.domains, *self.units.eval_only_domains]
        if self.seed.domains == "auto":
            return self  # resolved from the corpus at `units split` (corpus.resolve_seed_domains)
        # A unit domain may be a seed domain too: the seed then trains on that domain's documents that no unit
        # holds (data/units.py seed_tokens), as the paper's Wikipedia seed met M2D2's Wikipedia units; it never
        # sees a unit's tokens or an eval document.
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
        text = read_text(path)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except OSError as exc:
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
