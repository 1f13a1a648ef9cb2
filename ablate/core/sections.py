"""The typed sections of a study config (corpus, tokenizer, units, seed, train, eval, energy, eval files,
fidelity, optimize): one pydantic model each, strict about unknown keys.

How to run: not directly; ablate/core/config.py assembles them into StudyConfig and loads YAML:
    ablate config show --set optimize.steps=60

Defaults here are the demo study's values (configs/demo.yaml spells them out; a test keeps them equal).
"""

from __future__ import annotations

from typing import Literal, Optional, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
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


class CorpusConfig(Strict):
    source: Literal["debian", "files"] = "debian"
    path: str = "data/corpus"  # where `corpus build` writes / where local files live
    domain_field: str = "domain"
    text_field: str = "text"
    webster_max_bytes: int = Field(4_000_000, gt=0)
    max_bytes_per_domain: Optional[int] = Field(None, gt=0)


class TokenizerConfig(Strict):
    vocab_size: int = Field(4096, ge=300, le=65535)  # uint16 token files
    train_bytes: int = Field(3_000_000, gt=0)  # text sampled across domains to fit the BPE


class UnitsConfig(Strict):
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


class SeedConfig(Strict):
    mode: Literal["train", "import"] = "train"
    import_path: Optional[str] = None  # local HF causal-LM dir when mode=import
    # The seed's pretraining mix (never a unit's tokens, never an eval document: a unit domain gives the seed
    # only its documents no unit holds). auto: the Debian corpus's webster, unit and eval-only domains; for your
    # own files, every corpus domain that is neither a unit nor an eval-only domain (or import a seed).
    domains: list[str] | Literal["auto"] = "auto"
    # The eval sets the seed already knows (a `seed-known` target: forgetting is what a mixture changes there).
    # auto: the seed's own domains for a trained seed; every eval set no unit covers for an imported one (a
    # pretrained model is assumed to know general text). A list names them; [] says the seed knows none.
    knows: list[str] | Literal["auto"] = "auto"
    hidden_size: int = Field(96, gt=0)
    layers: int = Field(3, gt=0)
    heads: int = Field(4, gt=0)
    intermediate_size: int = Field(256, gt=0)
    steps: int = Field(300, ge=1)
    # passes over the seed mix (each sequence that many times, shuffled), still capped at `steps` batches: on a
    # small mix more steps alone stop at its end. 1, the default, stays out of the seed's id (ids before it stay)
    epochs: int = Field(1, ge=1)
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


class TrainConfig(Strict):
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
    # The seed's own dropout (GPT-2's config: 0.1) during continued pretraining: keep = train with the
    # probabilities in its config.json, zero = set every one to 0. Default keep: ablate trains the model as
    # its config says, as it always has (HF Trainer does the same), so no import changes behaviour
    # unannounced; a run with non-zero dropout prints a note pointing here, because continued pretraining
    # (the paper's OLMo, Llama, SmolLM2) usually runs without. Seeds trained here have none: a no-op.
    # Enters a member's id only when the effective dropout is non-zero (ablate/study/context.py run_hash).
    dropout: Literal["keep", "zero"] = "keep"
    checkpoint_every: int = Field(50, ge=1)
    threads: Optional[int] = Field(None, ge=1)  # torch CPU threads; None = torch default
    # torch.compile the training model (pays off on GPUs; on CPU it needs a C++ compiler). Its fused kernels sum
    # in another order, so the weights differ in the last bits: true enters a member's (and a seed's) id
    # (ablate/study/context.py Recipe.key), false adds nothing, so existing pools keep their members.
    # TF32 tensor cores for fp32 matmuls (CUDA only): a speed knob, not part of the id.
    compile: bool = False
    tf32: bool = True
    # AdamW's implementation: auto = torch's own choice, how ablate has always trained (fused on CUDA, the
    # per-tensor loop on CPU); fused | foreach | loop pick one. On CPU fused is ~5x faster per step at 135M
    # (bench/RESULTS.md), but each does its arithmetic in another order, so the weights differ in the last
    # bits: a choice other than auto enters a member's id (ablate/study/context.py Recipe.key) and auto adds
    # nothing, so every member trained before keeps its id. The fidelity protocol retrained with fused gives the
    # same per-eval-set figures as auto (docs/fidelity.md), so new studies take it (configs/smollm2.yaml); the
    # default stays auto because changing it would change every existing member's id.
    optimizer: Literal["auto", "fused", "foreach", "loop"] = "auto"
    # Where a union's training starts: seed = the seed (every member and union, as always); merge = the merge of
    # the mixture's unit members (weighted as the mixture), so a short run adds what training on the mixture
    # itself does and the merge cannot (the `polish` proxy: fidelity.polish_unions). merge enters the recipe's
    # key (Recipe.key) and so the run's id; seed adds nothing, so every member keeps its id.
    start: Literal["seed", "merge"] = "seed"


DEVICE_SPEC = r"auto|cpu|cuda(:\d+)?"  # StudyConfig.device


class EvalConfig(Strict):
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
    # rankings (search, sweep --target, score-mixture): resamples of the eval windows for each candidate's gap to #1
    # (ablate/scoring/uncertainty.py); 0 = no intervals. Seeded by bootstrap_seed: the same table twice.
    bootstrap: int = Field(1000, ge=0)
    bootstrap_seed: int = 0


class EnergyConfig(Strict):
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


class EvalFileConfig(Strict):
    """An eval set from the user's own file (Paloma-style JSONL, JSON, Parquet or text)."""

    path: str
    text_field: str = "text"
    max_bytes: Optional[int] = Field(None, gt=0)  # whole documents up to this many bytes; None = the whole file
    # the file's format where its name does not say it (a LICENSE, a README): as its suffix would
    format: Optional[Literal["jsonl", "json", "parquet", "txt"]] = None
    # text: documents scored as windows; choice: JSONL {context, choices, answer} scored as the answer's
    # bits per byte and accuracy over the choices; cloze: {context, continuation} lines (docs/tasks.md)
    kind: Literal["text", "choice", "cloze"] = "text"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data):  # `eval_sets: {heldout: my.jsonl}` = a path with the defaults
        return {"path": data} if isinstance(data, str) else data


class FidelityConfig(Strict):
    """What `ablate fidelity` trains and scores for a study (configs/fidelity/*.yaml)."""

    # ground truths: unit = one unit's tokens (equal compute), sum = k x one unit's tokens (add data)
    budgets: list[Literal["unit", "sum"]] = ["unit", "sum"]
    # multi-unit mixtures with trained truths: "all", or a number sampled across sizes k
    truth_mixtures: int | Literal["all"] = "all"
    noise_unions: int = Field(2, ge=0)  # truths retrained with a 2nd data order, per budget: the noise floor
    # members per unit trained again with another data order (replicate 1..R): what the `private` proxy reads
    unit_replicates: int = Field(0, ge=0, le=4)
    # a short union per truth mixture, trained on this fraction of one unit's tokens (0: none): a full union's
    # steps and schedule on a batch this fraction the size (budgets.short_config). What the `short` proxy reads,
    # its cost (the fraction per ranked mixture) in the same table as every other proxy's
    short_unions: float = Field(0.0, ge=0, lt=1)
    # a polished merge per truth mixture: the merge of its members trained further on the mixture for this fraction
    # of a union's steps (and tokens) on the full batch, the schedule compressed (budgets.polish_config). What the
    # `polish` proxy reads, its cost (the fraction per ranked mixture) in the same table as every other proxy's
    polish_unions: float = Field(0.0, ge=0, lt=1)
    # each polished merge trained in this many data orders (replicates 0..R-1), its log ppl their mean: one run's
    # pick moves with the data order as much as a retraining does, the mean of two moves less (bench/merge_polish.py)
    polish_orders: int = Field(1, ge=1, le=4)
    proxies: list[str] = ["merged", "task-sum", "additive", "own-additive", "calibrated", "regression", "ensemble",
                          "scaled", "features", "calibrated-ensemble", "private", "private-ensemble", "short",
                          "unit-shifts", "polish"]
    sample_seed: int = 0
    # built-in task targets (ablate/data/task_builders.py) added to the eval sets, built offline beside the corpus
    tasks: list[Literal["webster-definition", "fortune-ending"]] = []
    # the heading of the study's own FIDELITY.md section (`ablate fidelity CONFIG --section`); None = its name
    title: Optional[str] = None


class OptimizeConfig(Strict):
    """`ablate optimize`: mixture weights on the simplex by gradients through the merge (ablate/optimize/)."""

    steps: int = Field(40, ge=1)             # mirror-descent steps
    # the largest log-weight move of the first step (decays to 0); 0.3 over 0.1 was chosen leaving each
    # fidelity study out (FIDELITY.md "The step size, chosen leaving each study out")
    lr: float = Field(0.3, gt=0)
    kl: float = Field(0.0, ge=0)             # pull toward the prior: objective + kl x KL(w || prior)
    fit_fraction: float = Field(0.5, gt=0, lt=1)   # windows of each eval set the optimizer sees; the rest report
    split_seed: int = 0                      # which windows those are
    max_epochs: float = Field(4.0, gt=0)     # repetition cap: passes over a unit's data at the chosen budget
    floor: float = Field(0.02, ge=0, lt=1)   # weights below it are dropped and the rest renormalized
    bootstrap: int = Field(1000, ge=100)     # resamples of the held windows for the gain's interval
    # weights the gradient routes offer (ablate/optimize/candidates.py: the route's optimum, a lattice, corners, edges,
    # polished), ranked on the fit windows, measured on the held; 1 = the route's optimum alone (one point, as before)
    candidates: int = Field(5, ge=1)


