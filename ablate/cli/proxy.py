"""Commands about trusting the proxy: calibrate, suggest-unions, fidelity.

How to run:
    ablate calibrate                               # fidelity/calibrate.py refresh, then each proxy's fidelity
    ablate suggest-unions --budget 3 --truth unit  # fidelity/calibrate.py suggest_unions
    ablate fidelity                                # workflows/fidelity_runs.py run_fidelity (configs/fidelity/*.yaml)

Each function is one command's signature and a thin call into the library; ablate/cli/app.py
registers them by name. (Using the proxy to pick a mixture, `search`, is in cli/score.py.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli.shared import ConfigOpt, SetOpt, TruthOpt, open_study, print_rows, say
from ablate.core.errors import UsageError
from ablate.core.formats import fmt, yes_no
from ablate.study.budgets import BUDGETS, DEFAULT_TRUTH, QUESTIONS


def _fmt_quality(q: dict) -> list:
    return [q["n"], round(q["pearson"], 3), round(q["spearman"], 3), yes_no(q["top1"]),
            yes_no(q["top1_within_noise"]), fmt(q["regret"], 2, pct=True),
            round(q["pairwise_agreement"], 3)]


def calibrate(config: ConfigOpt = None, set_: SetOpt = None):
    """Fit the fitted proxies per ground truth; print every proxy's fidelity (fitted ones leave-one-union-out)."""
    from ablate.fidelity.calibrate import fidelity, refresh

    cfg, pool = open_study(config, set_)
    fitted = refresh(pool, cfg.eval.seq_len, log=say)
    if fitted is None:
        raise UsageError("not enough unions to calibrate (3 per ground truth): see `ablate suggest-unions --budget 3`")
    cols = ["eval_set", "proxy", "n", "pearson", "spearman", "top1", "top1_within_noise", "regret",
            "pairwise_beyond_noise", "noise_sd"]
    for budget in sorted(BUDGETS, key=lambda b: b != DEFAULT_TRUTH):  # the recommended question first
        rows = fidelity(pool, budget)
        if not rows:
            continue
        say(f"ground truth {budget!r}: {QUESTIONS[budget]} (fitted proxies: leave-one-union-out on this pool; "
            f"FIDELITY.md has the protocol)")
        print_rows(cols, [dict(zip(cols, [r["eval_set"], r["proxy"], *_fmt_quality(r), r["noise_sd"]]))
                          for r in rows])


def suggest_unions_cmd(budget: Annotated[int, typer.Option("--budget", help="how many unions to propose")] = 3,
                       truth: TruthOpt = "unit", config: ConfigOpt = None, set_: SetOpt = None):
    """Propose which unions to train next for the most informative calibration."""
    from ablate.data.units import unit_ids
    from ablate.fidelity.calibrate import suggest_unions

    cfg, pool = open_study(config, set_)
    if budget < 1:
        raise UsageError("--budget must be at least 1")
    if truth not in BUDGETS:
        raise UsageError(f"--truth must be one of {', '.join(BUDGETS)}, not {truth!r}")
    units = unit_ids(pool)
    picks = suggest_unions(pool, units, budget, truth)
    if not picks:
        say("every multi-unit union is already trained")
    for mix in picks:
        say(f"ablate train-mixture {' '.join(mix)} --budget {truth}")


def fidelity_cmd(configs: Annotated[Optional[list[str]], typer.Argument(
                     help="study configs (default: configs/fidelity/*.yaml)")] = None,
                 out: Annotated[Path, typer.Option("--out", help="Markdown report (and .json beside it)")] = Path("docs/results/FIDELITY.md"),
                 prepare_only: Annotated[bool, typer.Option("--prepare-only",
                                                            help="train and evaluate, do not score")] = False,
                 weights_only: Annotated[bool, typer.Option(
                     "--weights-only", help="only the equal-compute truth and 'Optimized mixtures, retrained'")] = False,
                 weights_targets: Annotated[str, typer.Option(
                     "--weights-targets", help="the weights section's objectives: all (each eval set and the mean) "
                     "or eval-only (the eval sets no unit covers, and the mean)")] = "all",
                 rankings_only: Annotated[bool, typer.Option(
                     "--rankings-only", help="score the rankings; keep --out's 'Optimized mixtures, retrained' "
                     "section as it is (no optimization, no training beyond the truths)")] = False,
                 unit_steps: Annotated[Optional[str], typer.Option(
                     "--unit-steps", help="one study at several unit lengths, e.g. 32,128,512: "
                     "its 'Fidelity vs unit length' section")] = None,
                 section: Annotated[bool, typer.Option(
                     "--section", help="write each study as its own section of --out (slow studies: the real "
                     "seed's), keeping the rest of the file")] = False):
    """The fidelity protocol: every proxy vs each ground truth on several studies, out of sample."""
    from ablate.workflows.fidelity_runs import run_fidelity, run_lengths

    if unit_steps is not None:
        from ablate.fidelity.lengths import parse_steps

        steps = parse_steps(unit_steps)
        if len(configs or []) != 1:
            raise UsageError("--unit-steps takes exactly one study config, e.g. configs/fidelity/literary-code.yaml")
        result = run_lengths(configs[0], steps, out, log=say)
        say(f"{len(steps)} unit lengths scored in {result['seconds'] / 60:.1f} min; wrote {out}")
        return

    if weights_only and rankings_only:
        raise UsageError("--weights-only and --rankings-only exclude each other: give one")
    if weights_targets not in ("all", "eval-only"):
        raise UsageError(f"--weights-targets must be all or eval-only, not {weights_targets!r}")
    result = run_fidelity(configs, out, log=say, prepare_only=prepare_only, weights_only=weights_only,
                          as_sections=section, rankings_only=rankings_only, weights_targets=weights_targets)
    say(f"{len(result['studies']) or len(result['weights'])} studies scored in {result['seconds'] / 60:.1f} min" +
        ("" if prepare_only else f"; wrote {out}"))
