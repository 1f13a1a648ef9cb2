"""Commands that score mixtures and rank them: score-mixture, export-mixture, sweep, search.

How to run:
    ablate score-mixture UNIT UNIT...              # workflows.steps.score_mixture
    ablate export-mixture UNIT UNIT... --out DIR   # inplace.export_mixture
    ablate sweep                                   # workflows.steps.run_sweep
    ablate search --target quotes --validate 2     # workflows.steps.run_search

Each function is one command's signature and a thin call into the library; ablate/cli/app.py
registers them by name. The library modules are imported inside the commands so that
`ablate --help` does not load torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli.shared import (
    ConfigOpt,
    DryOpt,
    ForceOpt,
    MaxLossOpt,
    ObjectiveOpt,
    ScreenOpt,
    SetOpt,
    TargetOpt,
    TargetWeightsOpt,
    TruthOpt,
    WeightsOpt,
    open_study,
    print_rows,
    say,
    say_screen,
)
from ablate.core.errors import UsageError, split_names, unknown_name
from ablate.core.formats import fmt
from ablate.study.budgets import DEFAULT_TRUTH


def score_mixture_cmd(units: Annotated[list[str], typer.Argument(help="units of the mixture; a+b is a macro group")],
                      weights: WeightsOpt = None,
                      eval_: Annotated[Optional[list[str]], typer.Option("--eval", help="eval set(s): comma list and/or repeated")] = None,
                      config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False, force: ForceOpt = False):
    """Average the units' members in memory and evaluate; also the union (if trained) and the seed."""
    from ablate.workflows.steps import score_mixture

    cfg, pool = open_study(config, set_, dry_run)
    notes: list[str] = []  # said after the table, where the reader's eye is
    rows = score_mixture(cfg, pool, units, weights, split_names(eval_) or None, force, warn=notes.append)
    tasks = ["accuracy"] if any("accuracy" in r for r in rows) else []  # a task eval set: accuracy beside bits/byte
    print_rows(["method", "budget", "eval_set", "ppl", "bits_per_byte", *tasks, "n_tokens", "eval_s", "vs_best",
                "tied_best"], rows)
    say("vs_best: perplexity against the eval set's best measured row, with its 95 % paired bootstrap interval over "
        "eval windows; tied_best: the interval reaches 0 (not distinguishable)")
    if tasks:
        say("task eval sets: a window is an example, ppl and bits_per_byte are the correct answer's; accuracy picks the "
            "choice with the lowest NLL per byte, with its 95 % bootstrap interval over examples")
    for line in notes:
        say(line)


def export_mixture_cmd(units: Annotated[list[str], typer.Argument(help="units of the mixture; a+b is a macro group")],
                       out: Annotated[Path, typer.Option("--out", help="output HF model directory")],
                       weights: WeightsOpt = None, config: ConfigOpt = None, set_: SetOpt = None,
                       dry_run: DryOpt = False):
    """Write the merged model as a normal HF directory (config, safetensors, tokenizer)."""
    from ablate.scoring.inplace import export_mixture
    from ablate.scoring.merge import merge_id, parse_mixture
    from ablate.study.context import load_study

    cfg, pool = open_study(config, set_, dry_run)
    units, w, spec = parse_mixture(units, weights)
    study = load_study(cfg, pool)
    members = [study.unit_member(u) for u in units]
    meta = {"mixture": units, "weights": w, "spec": spec, "members": members, "seed_id": study.seed["model_id"],
            "merge_id": merge_id(members, w), "merged_on": str(study.device)}
    export_mixture(pool, study.seed["model_id"], members, w, out, meta, full_hash=cfg.verify_hash,
                   device=study.device)
    say(f"wrote {out} (load with AutoModelForCausalLM.from_pretrained({str(out)!r}))")


def sweep(max_size: Annotated[Optional[int], typer.Option("--max-size", help="largest mixture size")] = None,
          units: Annotated[Optional[str], typer.Option("--units", help="comma-separated unit ids (default all)")] = None,
          jobs: Annotated[Optional[int], typer.Option("--jobs", help="worker processes")] = None,
          eval_: Annotated[Optional[list[str]], typer.Option("--eval", help="eval set(s): comma list and/or repeated")] = None,
          backend: Annotated[str, typer.Option("--backend", help="local (joblib) | dask | dask-local")] = "local",
          scheduler: Annotated[Optional[str], typer.Option("--scheduler",
                                                           help="Dask scheduler, tcp://HOST:PORT (--backend dask)")] = None,
          workers: Annotated[Optional[int], typer.Option("--workers",
                                                         help="LocalCluster processes (--backend dask-local)")] = None,
          sample: Annotated[Optional[int], typer.Option("--sample", help="N distinct random mixtures")] = None,
          sizes: Annotated[Optional[str], typer.Option("--sizes", help="mixture sizes A-B (default 1-n)")] = None,
          sample_seed: Annotated[Optional[int], typer.Option("--seed", help="seed of --sample (default 0)")] = None,
          mixtures: Annotated[Optional[Path], typer.Option(
              "--mixtures", help="file, one mixture per line: UNIT [UNIT|UNIT+UNIT ...] [--weights W,...]")] = None,
          screen: ScreenOpt = False, target: TargetOpt = None, target_weights: TargetWeightsOpt = None,
          objective: ObjectiveOpt = "mean", max_loss: MaxLossOpt = None,
          config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False, force: ForceOpt = False):
    """Score every mixture of the units (Gray-code order, one add/remove per step), a sample, or a file's;
    with --target, end with the best mixtures for that objective."""
    from ablate.workflows.steps import run_sweep, score_mixture

    cfg, pool = open_study(config, set_, dry_run)
    unit_list = [u.strip() for u in units.split(",")] if units else None
    if jobs is not None and jobs < 1:
        raise UsageError("--jobs must be at least 1")
    goal = None
    if target or target_weights or max_loss:  # checked before any work
        from ablate.data.units import eval_sets
        from ablate.optimize.objectives import parse_objective

        goal = parse_objective(target, [ev["domain"] for ev in eval_sets(pool)], kind=objective,
                               target_weights=target_weights, max_loss=max_loss)
    out = run_sweep(cfg, pool, unit_list, max_size=max_size, sizes=sizes, sample=sample, seed=sample_seed,
                    mixtures_file=mixtures, jobs=jobs, eval_names=split_names(eval_) or None, force=force,
                    backend=backend, scheduler=scheduler, workers=workers, screen=screen, log=say)
    say(f"sweep: {out['mixtures']} mixtures ({out['scored']} scored, {out['cached']} cached), "
        f"{out['reference_rows']} seed/union rows, {out['seconds']:.1f} s")
    if out.get("screened"):
        say_screen(out["screened"], out["dropped"])
    if goal is not None:
        if goal.needs_reference:  # worst case and guards compare with the uniform mixture of all swept units
            score_mixture(cfg, pool, out["units"], eval_names=goal.eval_sets)
        show_best(cfg, pool, goal, out["units"])


def show_best(cfg, pool, goal, units: list[str], top: int = 10) -> None:
    """The sweep's best mixtures for an objective (merged rows; exp(value): see `ablate search`), units alone
    among them, each with its gap to #1 and that gap's paired bootstrap interval (ablate/optimize/ranks.py)."""
    import math

    from ablate.optimize import ranks
    from ablate.optimize.search import rank_scored
    from ablate.scoring.uncertainty import describe_gap

    ranked = rank_scored(pool, goal, units)
    keys = [k for k, _ in ranked[:top]]
    gaps = ranks.ranking_gaps(cfg, pool, goal, "merged", keys, best=keys[0] if keys else None)
    rows = []
    for i, (k, v) in enumerate(ranked[:top]):
        g = gaps.get(k, {})
        rows.append({"rank": i + 1, "mixture": list(k[0]), "weights": list(k[1]), "proxy_ppl": math.exp(v),
                     "vs_top": describe_gap(g.get("gap"), g.get("gap_low"), g.get("gap_high")),
                     "tied_top": g.get("tied_top")})
    print_rows(["rank", "mixture", "weights", "proxy_ppl", "vs_top", "tied_top"], rows)
    say(f"best of {len(ranked)} scored mixtures for {goal.describe()} by the merged proxy; vs_top: against #1, with "
        f"its 95 % paired bootstrap interval over eval windows; tied_top: indistinguishable from #1")
    for line in ranks.ranking_notes(cfg, pool, goal, gaps, None):
        say(line)


def search(target: TargetOpt = None, target_weights: TargetWeightsOpt = None, objective: ObjectiveOpt = "mean",
           max_loss: MaxLossOpt = None,
           max_size: Annotated[int, typer.Option("--max-size", help="largest mixture size")] = 3,
           weights_grid: Annotated[Optional[str], typer.Option("--weights-grid", help="e.g. 1,2,4")] = None,
           method: Annotated[Optional[str], typer.Option(
               "--method", help="a proxy (merged, task-sum, additive, own-additive, calibrated, regression); "
                                "default: the protocol's best for --truth, see FIDELITY.md")] = None,
           truth: TruthOpt = DEFAULT_TRUTH,
           validate: Annotated[int, typer.Option(
               "--validate", help="measure the pool's unions on the target, then train the top M multi-unit "
                                  "candidates as unions")] = 0,
           validate_weighted: Annotated[bool, typer.Option("--validate-weighted",
                                                           help="also train the best weighted candidate")] = False,
           top: Annotated[int, typer.Option("--top", help="rows to show and store")] = 10,
           max_candidates: Annotated[int, typer.Option(
               "--max-candidates", help="above this many candidates, beam search instead of all")] = 2000,
           beam: Annotated[int, typer.Option("--beam", help="beam width of that search")] = 4,
           screen: ScreenOpt = False, config: ConfigOpt = None, set_: SetOpt = None,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="print the resolved config and the search's "
                                                                   "plan (candidates, proxy, truth) and exit")] = False):
    """Rank candidate mixtures for an objective over eval sets by the proxy; optionally validate by training."""
    from ablate.core.weights import parse_weights
    from ablate.data.units import eval_sets
    from ablate.optimize.objectives import parse_objective
    from ablate.scoring.uncertainty import describe_gap
    from ablate.workflows.steps import run_search

    cfg, pool = open_study(config, set_)
    if method is not None:
        import ablate.scoring.proxies as proxies

        if method not in proxies.names():
            raise unknown_name("proxy method", method, proxies.names(), where="--method: ")
    grid = None
    if weights_grid:
        grid = [float(x) for x in weights_grid.split(",")] if all(
            x.replace(".", "", 1).isdigit() for x in weights_grid.split(",")) else None
        if grid is None or any(g < 0 for g in grid) or not any(grid):
            raise UsageError(f"--weights-grid must be non-negative numbers, e.g. 1,2,4 (got {weights_grid!r})")
        parse_weights(grid, len(grid))
    goal = parse_objective(target, [ev["domain"] for ev in eval_sets(pool)], kind=objective,
                           target_weights=target_weights, max_loss=max_loss)
    if dry_run:
        return print_search_plan(cfg, pool, goal, max_size=max_size, grid=grid, method=method, truth=truth,
                                 validate=validate, top=top, max_candidates=max_candidates, beam=beam, screen=screen,
                                 validate_weighted=validate_weighted)
    out = run_search(cfg, pool, goal, max_size=max_size, grid=grid, method=method, truth=truth, validate=validate,
                     validate_weighted=validate_weighted, top=top, max_candidates=max_candidates, beam=beam,
                     screen=screen, log=say)
    cols = ["rank", "mixture", "weights", "proxy_ppl", "vs_top", "tied_top", "union_ppl", "union_rank",
            "validated"] + (["screened"] if screen else [])
    print_rows(cols, [r | {"vs_top": describe_gap(r["gap"], r["gap_low"], r["gap_high"])} for r in out["rows"][:top]])
    say_ranking_notes(out, truth)
    if out.get("screened"):
        say_screen(out["screened"], out["dropped"])
    scope = f": {out['scope']}" if out.get("scope") and out["strategy"] == "exhaustive" else ""
    say(f"{out['candidates']} candidates ({out['strategy']}{scope}); stored as {out['search_id']} in the `searches` table")


def print_search_plan(cfg, pool, goal, *, validate_weighted: bool, **options) -> None:
    """`search --dry-run`: the resolved config, then what the search would score and train, as YAML comments
    (the output stays a loadable config), checked like a real run; nothing is merged, trained or written."""
    from ablate.optimize.search import plan
    from ablate.study.budgets import seed_known

    p = plan(pool, goal, known=seed_known(cfg, goal.eval_sets, pool), **options)
    trains = options["validate"] + (1 if validate_weighted else 0)
    how = ("all scored (exhaustive)" if p["strategy"] == "exhaustive" else
           f"more than --max-candidates {p['max_candidates']}: a beam search of width {p['beam']}")
    typer.echo(cfg.to_yaml(), nl=False)
    for line in (f"search plan: objective {p['objective'].describe()}",
                 f"  {len(p['units'])} units, mixtures of up to {p['size']}, weights grid {p['grid']}: "
                 f"{p['n_all']} candidates ({p['scope']}), {how}",
                 f"  proxy {p['method']}, ground truth {p['truth']!r}; "
                 + (f"trains up to {trains} union(s) to validate" if trains else "trains nothing (no --validate)"),
                 "  dry run: nothing scored, trained or written"):
        typer.echo(f"# {line}")


def say_ranking_notes(out: dict, truth: str) -> None:
    """Below a search's table: what vs_top means, where the pick landed among the truths, the noise, warnings."""
    first = out["rows"][0]
    if any(r["gap"] is not None for r in out["rows"]):
        say(f"vs_top: the proxy's objective against #1's, with its 95 % paired bootstrap interval over eval windows "
            f"({first['bootstrap'] or 0} resamples); tied_top: the interval reaches 0, indistinguishable from #1")
    if first["union_rank"]:
        say(f"the proxy's choice ranks {first['union_rank']} of {first['n_unions_known']} known truths (trained "
            f"unions and units alone: a unit's truth is its member) (truth {truth!r}) for {out['objective']} "
            f"(regret {fmt(first['union_ppl'] / out['best_union_ppl'] - 1, 2, pct=True)})")
    if first["noise_floor"] is not None:
        say(f"noise floor: unions retrained with another data order differ by up to {first['noise_floor']:.2%} "
            f"(truth {truth!r}); candidates closer than that cannot be told apart by training them either")
    for line in out.get("notes", []):
        say(line)
