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

from ablate.core.config import StudyConfig
from ablate.core.formats import signed_pct
from ablate.store.pool import Pool

DEMO_TASK_EXAMPLES = 150  # every union and mixture is scored on it: small, the demo stays within its minutes


def add_demo_task(cfg: StudyConfig, log=print) -> str | None:
    """cfg.demo_task as an eval set of this run (add_builtin_task); returns its name."""
    if cfg.demo_task is None:
        return None
    return add_builtin_task(cfg, cfg.demo_task, lambda m: log(f"[1-4/8] {m}"))


def add_builtin_task(cfg: StudyConfig, name: str, log=print) -> str:
    """A built-in task (ablate/data/task_builders.py) as an eval set of `cfg`, built offline beside the corpus
    once (DEMO_TASK_EXAMPLES examples: every union and mixture is scored on it), unless the config already
    names one of that name. The demo's task and the fidelity protocol's (`fidelity.tasks`) come from here."""
    from ablate.core.config import EvalFileConfig
    from ablate.data.task_builders import BUILDERS, write_task

    path = Path(cfg.corpus.path).parent / "tasks" / f"{name}.jsonl"
    if name not in cfg.eval_sets and not path.exists():
        examples = BUILDERS[name](n=DEMO_TASK_EXAMPLES)
        log(f"task {name}: {len(examples)} multiple-choice examples built into {write_task(examples, path)}")
    cfg.eval_sets.setdefault(name, EvalFileConfig(path=str(path), kind="choice"))
    return name


def every_mixture(units: list[str]) -> list[tuple[list[str], list[float]]]:
    return [(list(mix), [1.0 / k] * k) for k in range(1, len(units) + 1) for mix in itertools.combinations(units, k)]


def score_verdict_proxies(cfg: StudyConfig, pool: Pool, units: list[str]) -> None:
    """The rows the verdict's fidelity tables rank beside the sweep's merged ones: the ensemble, the proxy `search`
    takes by default for eval-only targets (FIDELITY.md), on every eval set (text and task) and every mixture,
    from the members' cached token losses (no model built); with them the proxies fitted on its rows
    (calibrated-ensemble, features) are ranked too. A proxy needing what the demo does not train (private: replicate
    members) has no rows, and the tables leave it out (proxies.scored) rather than fail."""
    from ablate.scoring.evaluated import score_proxy
    from ablate.study.context import load_study

    score_proxy(load_study(cfg, pool), every_mixture(units), "ensemble", label="ensemble")


def run_demo(cfg: StudyConfig, pool: Pool, report_dir: Path, log=print) -> str:
    from ablate.fidelity.report import priced, task_verdicts, verdict_markdown, write_report
    from ablate.models.device import describe
    from ablate.optimize.defaults import default_method
    from ablate.study.budgets import DEFAULT_TRUTH, seed_known
    from ablate.train.members import build_members, train_truths, union_plan
    from ablate.workflows.steps import run_search, run_sweep

    t0 = time.perf_counter()
    log(f"training, merging and evaluating on {describe(cfg)}")  # a GPU asked for and missing: exit 2 now
    task = add_demo_task(cfg, log)
    units = build_members(cfg, pool, log, steps="[1-4/8] ")
    plans = {"unit": union_plan(units, cfg.demo_unions), "sum": union_plan(units, cfg.demo_add_data_unions)}
    truths = [DEFAULT_TRUTH] + [b for b in plans if b != DEFAULT_TRUTH]
    plan = plans[DEFAULT_TRUTH]
    log("[5/8] ground truths: " + ", ".join(f"{len(plans[b])} unions at budget {b}" for b in truths) +
        " (unit: one unit's tokens, which composition at equal compute; sum: k x, what if I add data)")
    for budget in truths:
        train_truths(cfg, pool, plans[budget], budget, plans[budget][:cfg.demo_noise_unions], log)
    log("[6/8] sweep: every mixture scored by merging")
    out = run_sweep(cfg, pool, units)
    log(f"      {out['mixtures']} mixtures ({out['scored']} scored, {out['cached']} cached) in {out['seconds']:.1f} s")
    score_verdict_proxies(cfg, pool, units)  # the ensemble on every eval set, the task's included
    texts = sorted(name for name, spec in cfg.eval_sets.items() if spec.kind == "text")
    target = (texts or cfg.units.eval_only_domains or cfg.units.domains)[0]
    if plan:
        # quotes has no unit and the demo's seed read it: the protocol's proxy for seed-known targets
        method = default_method(pool, DEFAULT_TRUTH, (target,), seed_known(cfg, [target], pool))
        log(f"[7/8] mixture search for {target!r} ({method} proxy, weighted candidates): the top one and the best "
            f"weighted one validated against the {DEFAULT_TRUTH!r} truth (a weighted one as a weighted union)")
        found = run_search(cfg, pool, target, max_size=len(units), grid=cfg.demo_search_grid,
                           method=method, truth=DEFAULT_TRUTH, validate=1, validate_weighted=True, log=log)
        for r in found["rows"]:
            if r["rank"] > 3 and not r["validated"]:
                continue
            log(f"      #{r['rank']} {'+'.join(r['mixture'])} w={[round(w, 2) for w in r['weights']]} "
                f"proxy {r['proxy_ppl']:.1f}" + (" (tied with #1)" if r["tied_top"] and r["rank"] > 1 else "")
                + (f", {DEFAULT_TRUTH} union {r['union_ppl']:.1f} (rank {r['union_rank']} "
                   f"of {r['n_unions_known']} known, units alone included; vs the best of them "
                   f"{signed_pct(r['union_ppl'] / found['best_union_ppl'] - 1)})" if r["union_ppl"] else ""))
        for line in found["notes"]:
            log(f"      {line}")
    log("[8/8] verdict")
    scope = priced(cfg, pool)
    text = verdict_markdown(pool, scope)
    path = write_report(pool, report_dir, scope)
    log(text)
    if task:  # the task's own verdict line: ranked by the answer's bits per byte, accuracy beside it
        for line in task_verdicts(pool, DEFAULT_TRUTH, ["merged", default_method(pool, DEFAULT_TRUTH, (task,))]):
            log(line)
    log(f"report: {path}   total demo time {time.perf_counter() - t0:.0f} s")
    return text
