"""CLI commands about trusting the proxy: calibrate, suggest-unions, search.

Registered on the main app by `ablate.cli` (imported at its end), so
`ablate --help` lists them with the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli import ConfigOpt, ScreenOpt, SetOpt, _print_rows, _study, app, say, say_screen
from ablate.errors import UsageError
from ablate.truths import DEFAULT_TRUTH


def _fmt_quality(q: dict) -> list:
    return [q["n"], round(q["pearson"], 3), round(q["spearman"], 3), "yes" if q["top1"] else "no",
            "yes" if q["top1_within_noise"] else "no", f"{100 * q['regret']:.2f} %",
            round(q["pairwise_agreement"], 3)]


TruthOpt = Annotated[str, typer.Option("--truth", help="ground truth: unit (equal compute) or sum (add data, "
                                                       "k x budget)")]


@app.command()
def calibrate(config: ConfigOpt = None, set_: SetOpt = None):
    """Fit the fitted proxies per ground truth; print every proxy's fidelity (fitted ones leave-one-union-out)."""
    from ablate.calibrate import fidelity, refresh
    from ablate.truths import BUDGETS, QUESTIONS

    cfg, pool = _study(config, set_)
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
        _print_rows(cols, [dict(zip(cols, [r["eval_set"], r["proxy"], *_fmt_quality(r), r["noise_sd"]]))
                           for r in rows])


@app.command("suggest-unions")
def suggest_unions_cmd(budget: Annotated[int, typer.Option("--budget", help="how many unions to propose")] = 3,
                       truth: TruthOpt = "unit", config: ConfigOpt = None, set_: SetOpt = None):
    """Propose which unions to train next for the most informative calibration."""
    from ablate.calibrate import suggest_unions
    from ablate.truths import BUDGETS
    from ablate.units import unit_ids

    cfg, pool = _study(config, set_)
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


@app.command()
def fidelity(configs: Annotated[Optional[list[str]], typer.Argument(
                 help="study configs (default: configs/fidelity/*.yaml)")] = None,
             out: Annotated[Path, typer.Option("--out", help="Markdown report (and .json beside it)")] = Path("FIDELITY.md"),
             prepare_only: Annotated[bool, typer.Option("--prepare-only", help="train and evaluate, do not score")] = False):
    """The fidelity protocol: every proxy vs each ground truth on several studies, out of sample."""
    from ablate.fidelity import run_fidelity

    result = run_fidelity(configs, out, log=say, prepare_only=prepare_only)
    say(f"{len(result['studies'])} studies scored in {result['seconds'] / 60:.1f} min" +
        ("" if prepare_only else f"; wrote {out}"))


@app.command()
def search(target: Annotated[str, typer.Option("--target", help="eval set to optimize")],
           max_size: Annotated[int, typer.Option("--max-size", help="largest mixture size")] = 3,
           weights_grid: Annotated[Optional[str], typer.Option("--weights-grid", help="e.g. 1,2,4")] = None,
           method: Annotated[Optional[str], typer.Option(
               "--method", help="a proxy (merged, task-sum, additive, own-additive, calibrated, regression); "
                                "default: the protocol's best for --truth, see FIDELITY.md")] = None,
           truth: TruthOpt = DEFAULT_TRUTH,
           validate: Annotated[int, typer.Option("--validate", help="train the top M as unions")] = 0,
           validate_weighted: Annotated[bool, typer.Option("--validate-weighted",
                                                           help="also train the best weighted candidate")] = False,
           top: Annotated[int, typer.Option("--top", help="rows to show and store")] = 10,
           max_candidates: Annotated[int, typer.Option(
               "--max-candidates", help="above this many candidates, beam search instead of all")] = 2000,
           beam: Annotated[int, typer.Option("--beam", help="beam width of that search")] = 4,
           screen: ScreenOpt = False, config: ConfigOpt = None, set_: SetOpt = None):
    """Rank candidate mixtures for a target eval set by the proxy; optionally validate by training."""
    from ablate.weights import parse_weights
    from ablate.search import run_search

    cfg, pool = _study(config, set_)
    grid = None
    if weights_grid:
        grid = [float(x) for x in weights_grid.split(",")] if all(
            x.replace(".", "", 1).isdigit() for x in weights_grid.split(",")) else None
        if grid is None or any(g < 0 for g in grid) or not any(grid):
            raise UsageError(f"--weights-grid must be non-negative numbers, e.g. 1,2,4 (got {weights_grid!r})")
        parse_weights(grid, len(grid))
    out = run_search(cfg, pool, target, max_size=max_size, grid=grid, method=method, truth=truth, validate=validate,
                     validate_weighted=validate_weighted, top=top, max_candidates=max_candidates, beam=beam,
                     screen=screen, log=say)
    cols = ["rank", "mixture", "weights", "proxy_ppl", "union_ppl", "union_rank", "validated"] + (
        ["screened"] if screen else [])
    _print_rows(cols, out["rows"][:top])
    first = out["rows"][0]
    if first["union_rank"]:
        say(f"the proxy's choice ranks {first['union_rank']} of {first['n_unions_known']} trained unions "
            f"(truth {truth!r}) on {target} (regret {100 * (first['union_ppl'] / out['best_union_ppl'] - 1):.2f} %)")
    if out.get("screened"):
        say_screen(out["screened"], out["dropped"])
    say(f"{out['candidates']} candidates ({out['strategy']}); stored as {out['search_id']} in the `searches` table")
