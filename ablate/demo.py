"""`ablate demo`: the whole study on the demo config, then the verdict.

How to run:
    ablate demo                         # configs/demo.yaml's values (the embedded default)
    ablate demo --set demo_unions=pairs # fewer ground-truth unions, faster

Steps (each reuses what the pool already has, so a rerun is quick):
corpus → units → seed → one member per unit → union baselines → sweep → report.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from ablate.config import StudyConfig
from ablate.pool import Pool


def union_plan(unit_ids: list[str], which: str) -> list[list[str]]:
    top = {"all": len(unit_ids), "pairs": 2, "none": 1}[which]
    return [list(c) for k in range(2, top + 1) for c in itertools.combinations(unit_ids, k)]


def build_members(cfg: StudyConfig, pool: Pool, log=print, steps: str = "") -> list[str]:
    """Corpus (Debian) → units → seed → one member per unit; returns the unit ids. Reuses what exists."""
    from ablate.corpus import build_debian_corpus, study_corpus
    from ablate.progress import price_line
    from ablate.seed import make_seed
    from ablate.train import train_member
    from ablate.units import split_units

    corpus_dir = Path(cfg.corpus.path)
    if cfg.corpus.source == "debian" and not (corpus_dir / "manifest.json").exists():
        log(f"{steps}building the Debian corpus in {corpus_dir} ({', '.join(cfg.all_domains)})")
        build_debian_corpus(corpus_dir, cfg.all_domains, webster_max_bytes=cfg.corpus.webster_max_bytes,
                            max_bytes_per_domain=cfg.corpus.max_bytes_per_domain, cache_dir=corpus_dir / ".cache")
    log(f"{steps}holding out eval sets and cutting base units")
    split = split_units(cfg, pool, study_corpus(cfg), log=log)
    units = sorted(r["unit_id"] for r in split["rows"] if r["kind"] == "unit")
    log(f"      {len(units)} units of {cfg.units.unit_tokens:,} tokens: {', '.join(units)}")
    log(f"{steps}seed model")
    log(price_line(make_seed(cfg, pool, log=log)))
    log(f"{steps}one member per unit ({len(units)})")
    for u in units:
        log(price_line(train_member(cfg, pool, [u], log=log)))
    return units


def run_demo(cfg: StudyConfig, pool: Pool, report_dir: Path, log=print) -> str:
    from ablate.report import verdict_markdown, write_report
    from ablate.search import run_search
    from ablate.truths import DEFAULT_METHOD, DEFAULT_TRUTH
    from ablate.sweep import run_sweep
    from ablate.progress import price_line
    from ablate.train import train_member

    from ablate.device import describe

    t0 = time.perf_counter()
    log(f"training, merging and evaluating on {describe(cfg)}")  # a GPU asked for and missing: exit 2 now
    units = build_members(cfg, pool, log, steps="[1-4/8] ")
    plans = {"unit": union_plan(units, cfg.demo_unions), "sum": union_plan(units, cfg.demo_add_data_unions)}
    truths = [DEFAULT_TRUTH] + [b for b in plans if b != DEFAULT_TRUTH]
    plan = plans[DEFAULT_TRUTH]
    log("[5/8] ground truths: " + ", ".join(f"{len(plans[b])} unions at budget {b}" for b in truths) +
        " (unit: one unit's tokens, which composition at equal compute; sum: k x, what if I add data)")
    for budget in truths:
        for mix in plans[budget]:
            log(price_line(train_member(cfg, pool, mix, budget=budget, log=log)))
        for mix in plans[budget][:cfg.demo_noise_unions]:  # a second data order: the run-to-run noise floor
            log(price_line(train_member(cfg, pool, mix, budget=budget, replicate=1, log=log)))
    log("[6/8] sweep: every mixture scored by merging")
    out = run_sweep(cfg, pool, units)
    log(f"      {out['mixtures']} mixtures ({out['scored']} scored, {out['cached']} cached) in {out['seconds']:.1f} s")
    target = (sorted(cfg.eval_sets) or cfg.units.eval_only_domains or cfg.units.domains)[0]
    if plan:
        method = DEFAULT_METHOD[DEFAULT_TRUTH]
        log(f"[7/8] mixture search for {target!r} ({method} proxy, weighted candidates): the top one and the best "
            f"weighted one validated against the {DEFAULT_TRUTH!r} truth (a weighted one as a weighted union)")
        found = run_search(cfg, pool, target, max_size=len(units), grid=cfg.demo_search_grid,
                           method=method, truth=DEFAULT_TRUTH, validate=1, validate_weighted=True, log=log)
        for r in found["rows"]:
            if r["rank"] > 3 and not r["validated"]:
                continue
            log(f"      #{r['rank']} {'+'.join(r['mixture'])} w={[round(w, 2) for w in r['weights']]} "
                f"proxy {r['proxy_ppl']:.1f}" + (f", {DEFAULT_TRUTH} union {r['union_ppl']:.1f} (rank {r['union_rank']} "
                                                  f"of {r['n_unions_known']} trained; vs the best of them "
                                                  f"{100 * (r['union_ppl'] / found['best_union_ppl'] - 1):+.2f} %)"
                                                  if r["union_ppl"] else ""))
    log("[8/8] verdict")
    text = verdict_markdown(pool)
    path = write_report(pool, report_dir)
    log(text)
    log(f"report: {path}   total demo time {time.perf_counter() - t0:.0f} s")
    return text
