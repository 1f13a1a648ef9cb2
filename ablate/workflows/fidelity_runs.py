"""The fidelity protocol: how well each proxy ranks mixtures, per ground truth, on several studies.

How to run:
    ablate fidelity                                        # every configs/fidelity/*.yaml → docs/results/FIDELITY.md
    ablate fidelity configs/fidelity/six-units.yaml --out /tmp/F.md
    ablate fidelity configs/fidelity/literary-code.yaml --unit-steps 32,128,512   # its section of FIDELITY.md
    ablate fidelity configs/fidelity-real/smollm2-cpu.yaml --section              # a study as its own section

For each study: build it (corpus, units, seed, one member per unit), train its ground
truths — every multi-unit mixture (or a sample across sizes) under each budget (`unit`:
one unit's tokens, "which composition at equal compute?"; `sum`: k x one unit's tokens,
"what if I add data and train longer?") plus a few replicates for the noise floor — then
score every mixture with the proxies that have rows of their own (`merged`, `task-sum`, the `scaled`
grid, the `ensemble` from the members' cached token losses).

Scoring (protocol.py) is out of sample: a fitted proxy (`calibrated`, `regression`) is fitted
on m unions picked by `suggest-unions` (m = 0, n/2, n, 2n: realistic calibration budgets) and
scored only on the other truths; the unfitted proxies are scored on the same held-out truths,
so every comparison is paired. Everything is cached in each study's pool: a rerun only scores. `--unit-steps` reruns one study
with units of several lengths (fidelity/lengths.py); `--section` writes a slow study (the real seed's)
as its own section of FIDELITY.md instead of into the protocol's pooled tables (fidelity/study_section.py).
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import numpy as np

from ablate.core.config import StudyConfig, load_config
from ablate.core.errors import UsageError
from ablate.fidelity.protocol import score_study, write_markdown
from ablate.fidelity.weights_report import write_section
from ablate.scoring import proxies
from ablate.scoring.drift import score_drift
from ablate.scoring.evaluated import score_proxy
from ablate.scoring.proxies import scaled
from ablate.scoring.score import score_reference_models
from ablate.store.pool import Pool
from ablate.store.results import existing_rows, write_rows
from ablate.study.budgets import polish_budget, short_budget
from ablate.study.context import load_study
from ablate.train.members import (
    build_members,
    train_polish_unions,
    train_short_unions,
    train_truths,
    train_unit_replicates,
)
from ablate.workflows.demo import add_builtin_task
from ablate.workflows.steps import run_sweep
from ablate.workflows.weights_runs import optimized_mixtures

DEFAULT_STUDIES = "configs/fidelity/*.yaml"


def truth_mixtures(units: list[str], how: int | str, seed: int) -> list[list[str]]:
    """Every multi-unit mixture, or `how` of them sampled so that every size k is represented."""
    every = [list(c) for k in range(2, len(units) + 1) for c in itertools.combinations(units, k)]
    if how == "all" or how >= len(every):
        return every
    rng = np.random.default_rng(seed)
    by_k = {k: [m for m in every if len(m) == k] for k in range(2, len(units) + 1)}
    quota = {k: max(1, round(how * len(ms) / len(every))) for k, ms in by_k.items()}
    out = []
    for k, ms in by_k.items():
        pick = sorted(rng.choice(len(ms), size=min(quota[k], len(ms)), replace=False))
        out += [ms[i] for i in pick]
    return out


def check_domains(cfg: StudyConfig, source: str) -> None:
    """A fidelity config naming a domain the corpus cannot provide fails before any work."""
    from ablate.data.corpus import corpus_domains

    have = corpus_domains(cfg)
    missing = sorted(set(cfg.all_domains) - set(have))
    if missing:
        raise UsageError(f"{source}: domain(s) {', '.join(missing)} not in the corpus "
                         f"(available: {', '.join(sorted(have))})")


def prepare_study(cfg: StudyConfig, log=print) -> dict:
    """Build one study and train/evaluate everything its scoring needs; returns its units and truths."""
    pool = Pool(cfg.pool)
    t0 = time.perf_counter()
    units = build_members(cfg, pool, log)
    train_unit_replicates(cfg, pool, units, cfg.fidelity.unit_replicates, log)
    truths = truth_mixtures(units, cfg.fidelity.truth_mixtures, cfg.fidelity.sample_seed)
    log(f"{cfg.name}: {len(truths)} ground-truth mixtures x budgets {', '.join(cfg.fidelity.budgets)}")
    for budget in cfg.fidelity.budgets:
        train_truths(cfg, pool, truths, budget, [m for m in truths if len(m) == 2][:cfg.fidelity.noise_unions], log)
    train_short_unions(cfg, pool, truths, short_budget(cfg), log)
    train_polish_unions(cfg, pool, truths, polish_budget(cfg), log)
    run_sweep(cfg, pool, units, log=log)
    study = load_study(cfg, pool)
    write_rows(pool, score_reference_models(study, truths, existing_rows(pool, study.precision)))
    score_proxy_rows(study, cfg.fidelity.proxies, units, truths)
    return {"units": units, "truths": truths, "seconds": time.perf_counter() - t0}


def score_proxy_rows(study, names: list[str], units: list[str], truths: list[list[str]]) -> None:
    """The rows the evaluated proxies predict from, for the units alone and every truth mixture (uniform)."""
    uniform = [(mix, [1.0 / len(mix)] * len(mix)) for mix in truths]
    if any(getattr(proxies.get(n), "needs_replicates", False) for n in names):  # `private`'s drift rows, once
        score_drift(study, units)
    for name in names:
        proxy = proxies.get(name)
        if name == "ensemble":  # from the members' cached token losses, no model built: every mixture, as the sweep
            every = [[u] for u in units] + truth_mixtures(units, "all", 0)
            score_proxy(study, [(mix, [1.0 / len(mix)] * len(mix)) for mix in every], name)
        elif name == "scaled":  # its β grid; β = 0 and 1 are merged's and task-sum's rows
            for beta in scaled.BETAS:
                score_proxy(study, uniform, scaled.method(beta))
        elif proxy.evaluated and name != "merged":  # merged rows come from the sweep; fitted ones need none
            score_proxy(study, uniform, name)


def build_shared_corpora(cfgs: list[StudyConfig], log=print) -> None:
    """Studies that share a Debian corpus folder get it built once, with every domain any of them needs."""
    from ablate.data.corpus import ensure_debian_corpus

    folders: dict[str, set[str]] = {}
    for cfg in cfgs:
        if cfg.corpus.source == "debian":
            folders.setdefault(cfg.corpus.path, set()).update(cfg.all_domains)
    for folder, domains in folders.items():
        first = next(c for c in cfgs if c.corpus.path == folder)
        ensure_debian_corpus(Path(folder), sorted(domains), webster_max_bytes=first.corpus.webster_max_bytes,
                             max_bytes_per_domain=first.corpus.max_bytes_per_domain, log=log)


def study_configs(paths: list[str] | None) -> list[tuple[str, StudyConfig]]:
    files = [Path(p) for p in paths] if paths else sorted(Path().glob(DEFAULT_STUDIES))
    if not files:
        raise UsageError(f"no study configs (looked for {DEFAULT_STUDIES})")
    studies = [(str(f), load_config(f)) for f in files]
    for _, cfg in studies:
        for name in cfg.fidelity.tasks:  # task targets, scored by the protocol like any eval set
            add_builtin_task(cfg, name)
    return studies


def run_fidelity(paths: list[str] | None, out: Path | None, log=print, prepare_only: bool = False,
                 weights_only: bool = False, as_sections: bool = False, rankings_only: bool = False,
                 weights_targets: str = "all") -> dict:
    """The whole protocol: prepare every study, score every proxy per truth, write the Markdown; then the
    optimized mixtures, retrained (its own section). `weights_only`: the equal-compute truth and that section.
    `rankings_only`: the rankings alone (the weights section already in `out` is kept as it is);
    `weights_targets`: "all" objectives in that section, or "eval-only" (the eval-only sets and the mean).
    `as_sections`: each study scored into its own section of `out` (no pooled tables, no weights)."""
    studies = study_configs(paths)
    if as_sections:
        return run_study_sections(studies, out, log, prepare_only)
    for source, cfg in studies:  # every config is checked before any study starts training
        check_domains(cfg, source)
        if weights_only:
            cfg.fidelity.budgets = ["unit"]  # the weights answer "which composition at equal compute?"
    build_shared_corpora([cfg for _, cfg in studies], log)
    results, weights, t0 = [], [], time.perf_counter()
    for source, cfg in studies:
        prep = prepare_study(cfg, log=log)
        if not prepare_only and not weights_only:
            results.append(score_study(cfg, prep, source))
        log(f"{cfg.name}: ready in {prep['seconds']:.0f} s")
    seconds = time.perf_counter() - t0
    if out is not None and results:
        write_markdown(results, out, seconds, [s for s, _ in studies])
    if not prepare_only and not rankings_only:
        t1 = time.perf_counter()
        for _, cfg in studies:  # the section is rewritten after each study: a run cut short keeps what it did
            weights.append(optimized_mixtures(cfg, log=log, targets=weights_targets))
            if out is not None:
                write_section(out, weights, time.perf_counter() - t1, configs=paths or None)
    seconds = time.perf_counter() - t0
    return {"studies": results, "weights": weights, "seconds": seconds, "minutes": math.ceil(seconds / 60)}


def run_lengths(path: str, steps: list[int], out: Path, log=print) -> dict:
    """One study at several unit lengths: prepare each (own pool), score the merge vs the equal-compute
    truth, measure how far members moved; FIDELITY.md's unit-length section, its plot and raw JSON."""
    import json

    from ablate.fidelity import lengths
    from ablate.fidelity.markdown import LENGTHS_HEADING, replace_section
    from ablate.store.pool import atomic_write_bytes

    (source, cfg), = study_configs([path])
    check_domains(cfg, source)
    build_shared_corpora([cfg], log)
    t0, results = time.perf_counter(), []
    for n in steps:
        variant = lengths.length_variant(cfg, n)
        log(f"{variant.name}: units of {n} steps ({variant.units.unit_tokens:,} tokens) in {variant.pool}")
        results.append(lengths.score_length(variant, n, prepare_study(variant, log=log), source))
    seconds = time.perf_counter() - t0
    png = lengths.plot(results, out.with_name(out.stem + "-lengths.png"))
    replace_section(out, LENGTHS_HEADING, lengths.section(results, source, seconds, png.name))
    atomic_write_bytes(out.with_name(out.stem + "-lengths.json"), json.dumps(results, indent=1, default=str).encode())
    return {"lengths": results, "seconds": seconds}


def run_study_sections(studies: list[tuple[str, StudyConfig]], out: Path | None, log, prepare_only: bool) -> dict:
    """Studies reported on their own (fidelity/study_section.py): prepared, scored, one section each."""
    from ablate.fidelity.study_section import write_study_section

    for source, cfg in studies:
        check_domains(cfg, source)
    build_shared_corpora([cfg for _, cfg in studies], log)
    results, t0 = [], time.perf_counter()
    for source, cfg in studies:
        prep = prepare_study(cfg, log=log)
        log(f"{cfg.name}: ready in {prep['seconds']:.0f} s")
        if prepare_only:
            continue
        results.append(score_study(cfg, prep, source))
        if out is not None:
            write_study_section(out, results[-1], source, time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    return {"studies": results, "weights": [], "seconds": seconds, "minutes": math.ceil(seconds / 60)}
