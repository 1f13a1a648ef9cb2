"""`ablate optimize`: mixture weights for a target suite, ready for a training config, proven by retraining.

How to run:
    ablate optimize --target quotes                                   # all units, one unit's budget; the route by kind
    ablate optimize --target fiction --route merged                   # a route named: that route alone
    ablate optimize --target fiction,bible,quotes --objective worst --out weights.yaml
    ablate optimize --target quotes --max-loss fiction:2 --tokens 400000 --max-epochs 2
    ablate optimize --target quotes --validate                        # + train the weighted and the uniform union
    ablate optimize --target quotes --validate 3                      # + train the top 3 candidates; keep the best
    ablate optimize --target quotes --candidates 1                    # the route's optimum alone (one point)
    ablate optimize --target quotes --force                           # recompute a stored optimization

Every flag and path (`--out` included) is checked first, then the plan (ablate/optimize/optimization.py
plan_optimization, a typed Plan: the objective, the units and their members, the repetition caps for the budget
the weights are meant for, the route (ablate/optimize/routes.py; not named: the one for the kind of target,
optimize/defaults.py default_route, with the partner route's top candidate at #2), the row's id). A plain rerun of the same
optimization prints the stored row (with its validation, if any) instead of recomputing it; `--force`
recomputes. The command prints what ablate recommends (uniform when the gate says uniform) with its tokens and
epochs, the optimized weights beside it for reference, the top candidates the route offered (ranked on the fit
windows, each with its gain on the held ones), the gate's answer beside the old gate's, and with `--validate K`
hands over to the floor that may both optimize and train (ablate/workflows/optimize_runs.py): it says what it
will train, trains the top K candidates at that budget, the uniform union and a replicate of the first (the
noise band), measures all of them on the held windows the optimizer never saw and ends with one verdict line;
the best retrained candidate is then the recommendation when it beats uniform beyond the band. `--out` is
written last (per unit and per domain, with the validation when there was one; its format: docs/weights-file.md).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from ablate.cli.shared import (
    ConfigOpt,
    DryOpt,
    ForceOpt,
    MaxLossOpt,
    ObjectiveOpt,
    SetOpt,
    TargetOpt,
    TargetWeightsOpt,
    open_study,
    print_rows,
    say,
)
from ablate.core.errors import UsageError
from ablate.core.formats import rel, rel_band
from ablate.store.pool import atomic_write_bytes

OUT_SUFFIXES = (".json", ".yaml", ".yml")
# --route's help: the registry's routes.help_text() (ablate/optimize/routes.py), written out because importing the
# registry here would load torch for `ablate --help`; tests/optimize/test_routes.py keeps the two equal
ROUTE_HELP = ("merged (gradients through the merge, no union needed), ensemble (exact gradients of the members' "
              "per-token mixture, from cached token losses) or regression (a law fitted on the trained unions)")
ROUTE_DEFAULT = ("; default: ensemble where no unit covers a target (the merged route's top candidate held at #2), "
                 "merged elsewhere")


def optimize(target: TargetOpt = None, target_weights: TargetWeightsOpt = None, objective: ObjectiveOpt = "mean",
             max_loss: MaxLossOpt = None,
             units: Annotated[Optional[str], typer.Option("--units", help="comma-separated unit ids (default all)")] = None,
             tokens: Annotated[Optional[int], typer.Option(
                 "--tokens", help="training budget the weights are for (default: one unit's tokens)")] = None,
             max_epochs: Annotated[Optional[float], typer.Option(
                 "--max-epochs", help="repetition cap: passes over a unit's data (default optimize.max_epochs)")] = None,
             floor: Annotated[Optional[float], typer.Option(
                 "--floor", help="drop weights below this, renormalize (default optimize.floor)")] = None,
             steps: Annotated[Optional[int], typer.Option("--steps", help="mirror-descent steps")] = None,
             out: Annotated[Optional[Path], typer.Option(
                 "--out", help="weights file: .json, .yaml or .yml (per unit and per domain)")] = None,
             route: Annotated[Optional[str], typer.Option("--route", help=ROUTE_HELP + ROUTE_DEFAULT)] = None,
             validate: Annotated[Optional[int], typer.Option(
                 "--validate", metavar="K",
                 help="train the top K candidates (--validate alone: K = 1, the optimized weights), the uniform "
                      "union and a replicate; recommend the best retrained one if it beats uniform beyond noise"
             )] = None,
             candidates: Annotated[Optional[int], typer.Option(
                 "--candidates", help="weights the route offers, ranked on the fit windows (1: its optimum alone; "
                                      "default optimize.candidates)")] = None,
             force: ForceOpt = False, config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False):
    """Continuous mixture weights for an objective over eval sets, by gradients through the merge."""
    check_flags(out, tokens, max_epochs, floor, steps, validate, candidates)  # first: errors name the flag typed
    overrides = list(set_ or []) + [f"optimize.{k}={v}" for k, v in
                                    (("max_epochs", max_epochs), ("floor", floor), ("steps", steps),
                                     ("candidates", candidates)) if v is not None]
    # hints repeat the user's --set, not the flags turned into overrides
    cfg, pool = open_study(config, overrides, dry_run, sets=list(set_ or []))
    from ablate.optimize.optimization import plan_optimization, run_optimization, stored_optimization
    from ablate.optimize.ranks import seed_notes
    from ablate.workflows.optimize_runs import validation_cost

    if validate and cfg.optimize.candidates < validate:  # retraining K needs K candidates to choose from
        cfg.optimize.candidates = validate
    plan = plan_optimization(cfg, pool, target, target_weights, objective, max_loss, units, tokens, route)
    for line in seed_notes(cfg, pool, plan.objective.eval_sets) + route_notes(plan, chosen=route is None):
        say(line)
    if validate:  # what it will train, said before any work
        say(validation_cost(plan, validate) + "; optimizing first")
    row = None if force else stored_optimization(pool, plan)
    if row is None:
        result = run_optimization(cfg, pool, plan)
        row = result["row"]
    else:
        result = {"row": row, "weights": row["optimized_weights"], "plan": plan}
    show(row, plan, reused=result.get("seconds") is None)
    if validate:
        row = validate_and_show(cfg, pool, plan, result, row, validate)
    elif row.get("validated"):
        say(f"validated before (retrained on the held windows): optimized union {row['union_optimized']:.4f}, uniform "
            f"union {row['union_uniform']:.4f}, best of {row['unions_compared']} trained {row['union_best']:.4f}")
        say_trained(row.get("validated_candidates") or [])
    if out is not None:  # after the validation: the file carries it
        write_weights_file(row, out)
        say(f"weights written to {out} (what ablate recommends: {row['recommended']})")
    if row.get("validated"):
        if row.get("recommended_by") == "validation":
            say(verdict(row))
        say(row["verdict"])  # the last line: the one verdict


def route_notes(plan, chosen: bool) -> list[str]:
    """Where the route was chosen by the kind of target and is not the merge, one line that says so."""
    if not chosen or plan.route == "merged":
        return []
    partner = f"; the {plan.partner} route's top candidate is #2 of the shortlist" if plan.partner else ""
    return [f"route: {plan.route}, the default where no unit covers the target (--route merged for the merge)"
            + partner]


def validate_and_show(cfg, pool, plan, result: dict, row: dict, k: int) -> dict:
    """--validate K (at most the candidates the route offered): train, show the retrained unions; the new row."""
    from ablate.workflows.optimize_runs import validate_optimization

    offered = len(row.get("candidates") or [None])
    if offered < k:
        say(f"--validate {k}: this route offered {offered} candidate{'s' if offered > 1 else ''}; training {offered}")
    realized = validate_optimization(cfg, pool, plan, result, k=min(k, offered))
    show_validation(realized)
    return realized["row"]


def say_trained(picks: list[dict]) -> None:
    """Which candidates --validate K trained and what each realized (nothing to add for one)."""
    if len(picks) > 1:
        say(f"trained {len(picks)} candidates: " + "; ".join(
            f"#{p['rank']} {p['source']} {rel(p['realized_gain'])} over uniform" for p in picks))


def bare_validate(args: list[str]) -> list[str]:
    """`--validate` with no number means K = 1 (what --validate was before it took K): typer has no option with an
    optional value, so the command's arguments get the 1 before they are parsed (OptimizeCommand)."""
    out = []
    for i, a in enumerate(args):
        out.append(a)
        if a == "--validate" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("1")
    return out


class OptimizeCommand(TyperCommand):
    """`ablate optimize`'s click command: `--validate` alone is `--validate 1`."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, bare_validate(list(args)))


def check_flags(out: Path | None, tokens: int | None, max_epochs: float | None, floor: float | None,
                steps: int | None, validate: int | None = None, candidates: int | None = None) -> None:
    """Every flag and the output path, before any work: exit 2 naming the flag and the real reason."""
    if tokens is not None and tokens <= 0:
        raise UsageError(f"--tokens must be a positive number of tokens (got {tokens})")
    if max_epochs is not None and not (math.isfinite(max_epochs) and max_epochs > 0):
        raise UsageError(f"--max-epochs must be > 0 passes over a unit's data (got {max_epochs:g})")
    if floor is not None and not (0 <= floor < 1):
        raise UsageError(f"--floor must be >= 0 and < 1 (got {floor:g})")
    if steps is not None and steps < 1:
        raise UsageError(f"--steps must be 1 or more (got {steps})")
    if validate is not None and validate < 1:
        raise UsageError(f"--validate K must be 1 or more candidates to retrain (got {validate})")
    if candidates is not None and candidates < 1:
        raise UsageError(f"--candidates must be 1 or more (got {candidates})")
    if out is not None:
        check_out(out)


def check_out(out: Path) -> None:
    """--out must be a file ablate can write: the suffix, not a folder, and its folder creatable and writable.
    Writable is tried, not guessed from the mode bits: a file is created and removed in the nearest folder that
    exists (root passes os.access everywhere, and /proc or a read-only mount only refuse the write itself)."""
    if out.suffix.lower() not in OUT_SUFFIXES:
        raise UsageError(f"--out must end in .json, .yaml or .yml (got {out.name!r})")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder: give a file name ending in .json, .yaml or .yml")
    parent = out.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--out {out}: {parent} is a file, not a folder")
    if out.exists() and not os.access(out, os.W_OK):
        raise UsageError(f"--out {out}: no permission to write it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ablate-out-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write in {parent} ({exc.strerror or exc})") from None


def _level(value: float, objective) -> str:
    """An objective value in log ppl, with its perplexity where it is one (a mean's: the geometric mean)."""
    if objective.kind == "worst":  # the worst set's change vs uniform: not a perplexity
        return f"{value:+.4f}"
    label = "ppl" if len(objective.targets) == 1 else "geo-mean ppl"
    return f"{value:.4f} ({label} {math.exp(value):.4g})"


def show(row: dict, plan, reused: bool = False) -> None:
    """The recommendation (the table and its headline), what the held windows said, the gate, the verdict."""
    from ablate.optimize.optimization import by_domain

    objective = plan.objective
    print_rows(["unit", "domain", "weight", "tokens", "epochs", "optimized_weight"],
               [{"unit": u, "domain": d, "weight": round(w, 4), "tokens": t, "epochs": round(e, 3),
                 "optimized_weight": round(o, 4)} for u, d, w, t, e, o in
                zip(row["units"], row["domains"], row["weights"], row["tokens"], row["epochs"],
                    row["optimized_weights"])])
    which = ("the optimized weights" if row["recommended"] == "optimized" else
             "the uniform weights (optimized_weight: the optimizer's, for reference only)")
    domains = by_domain(row["domains"], row["weights"])
    say(f"recommended: {which}; by domain: " + ", ".join(f"{d} {w:.4f}" for d, w in domains.items())
        + f"; tokens sum to the budget, {row['budget_tokens']:,}")
    interval = (f" [{row['held_gain_low']:+.4f}, {row['held_gain_high']:+.4f}] (95 %, bootstrap over held windows)"
                if row["held_gain_low"] is not None else " (the law refitted on the held windows' values; no interval)")
    say(f"{row['route']} route, objective {row['objective']} (log ppl; lower is better), budget "
        f"{row['budget_tokens']:,} tokens: fit windows {_level(row['fit_optimized'], objective)} vs uniform "
        f"{_level(row['fit_uniform'], objective)}; held windows {_level(row['held_optimized'], objective)} vs uniform "
        f"{_level(row['held_uniform'], objective)}, gain {row['held_gain']:+.4f} ({rel(row['held_gain'])} ppl)"
        + interval)
    show_candidates(row)
    gate_line = gate_text(row)
    if gate_line:
        say(gate_line)
    say(verdict(row, gate_only=True))
    if row.get("gate_rule_old"):
        say(f"the old gate (the proxy's scale: {row['gate_rule_old']}, held gain above "
            f"{row['gate_threshold_old']:.4f}) would recommend: {row['recommended_old']}")
    if reused:
        say(f"reused {row['row_id']} from the `optimizations` table (computed {row['created_at']}: same seed, "
            f"members, eval data, objective, budget and settings); --force recomputes it")
    else:
        say(f"stored as {row['row_id']} in the `optimizations` table ({row['seconds']:.1f} s, "
            f"{(row['energy_kwh'] or 0) * 1000:.3f} Wh [{row['energy_method']}])")


SHOWN = 3  # candidates in the table; the row keeps every one


def _compact(units: list[str], weights: list[float]) -> str:
    return " ".join(f"{u} {w:.3f}" for u, w in zip(units, weights) if w > 0)


def show_candidates(row: dict) -> None:
    """The top candidates the route offered, ranked on the fit windows, each with its gain on the held ones."""
    found = row.get("candidates") or []
    if len(found) < 2:
        return
    print_rows(["#", "candidate", "weights", "fit_gain", "held_gain", "held_interval"],
               [{"#": c["rank"], "candidate": c["source"], "weights": _compact(row["units"], c["weights"]),
                 "fit_gain": f"{row['fit_uniform'] - c['fit']:+.4f}", "held_gain": rel(c["held_gain"]),
                 "held_interval": f"[{c['held_gain_low']:+.4f}, {c['held_gain_high']:+.4f}]"} for c in found[:SHOWN]])
    more = f"; {len(found) - SHOWN} more in the row's `candidates`" if len(found) > SHOWN else ""
    say(f"{len(found)} candidates, ranked by the proxy on the fit windows (#1 is optimized_weight), each measured on "
        f"the held windows{more}; --validate K retrains the top K")


def gate_text(row: dict) -> str | None:
    """How the held gain was judged: calibrated on the trained unions where there are 3 or more, else the protocol's
    rate (never an RMS or a line over fewer than 3 unions)."""
    from ablate.optimize.protocol import MIN_ERROR_UNIONS

    if row["gate_rule"] == "calibrated":
        cal = row["calibration"] if isinstance(row["calibration"], dict) else json.loads(row["calibration"])
        threshold = ("no held gain would do: the proxy's gains go the wrong way on them" if row["gate_threshold"]
                     is None else f"it clears the residual from a held gain of {row['gate_threshold']:+.4f}")
        return (f"the proxy's gains calibrated on {cal['unions']} trained unions (fit windows): realized ~ "
                f"{cal['a']:+.4f} + {cal['b']:.3f} x predicted, leave-one-out residual ±{cal['residual']:.4f} "
                f"({rel_band(cal['residual'])}); the held gain {row['held_gain']:+.4f} calibrates to "
                f"{row['calibrated_gain']:+.4f} ({threshold})")
    if row["gate_rule"] == "protocol rate":
        n = row["proxy_error_unions"] or 0
        return (f"the proxy is not calibrated here: that needs {MIN_ERROR_UNIONS} trained unions of these units at "
                f"this budget besides the uniform one, and this pool has {n} (ablate suggest-unions picks them); so "
                f"the held gain must reach {row['gate_threshold']:.4f} log ppl ({rel(row['gate_threshold'])}), above "
                f"which every case of the fidelity protocol realized a gain once trained (docs/optimize.md, The gate)")
    return None


def verdict(row: dict, gate_only: bool = False) -> str:
    """What to train with, and why (the row's `recommended`): after --validate the retrained truth's answer, unless
    `gate_only` (the line printed before the validation's)."""
    keep = "train with the uniform weights (the table and --out carry them; the optimized ones are kept for reference)"
    if row.get("recommended_by") == "validation" and not gate_only:
        picks = row.get("validated_candidates") or []
        best = max(picks, key=lambda p: p["realized_gain"]) if picks else None
        if row["recommended"] == "optimized" and best is not None:
            return (f"train with candidate #{best['rank']} ({best['source']}): retrained, it beats the uniform "
                    f"union beyond the noise band ({row['verdict']})")
        return f"{keep}: no retrained candidate beats the uniform union beyond the noise band ({row['verdict']})"
    if not row["guards_held"]:
        broken = [f"{name} {g['change_pct']:+.2f} % vs uniform, limit {g['max_loss_pct']:g} %, breached by "
                  f"{g['breach_pct']:.2f} %" if g["change_pct"] is not None else name
                  for name, g in (row.get("guards") or {}).items() if not g["held"]]
        return f"a --max-loss guard does not hold on the held windows ({'; '.join(broken)}): {keep}"
    if not row["resolved"]:
        return f"nothing beats uniform beyond what the proxy can resolve on the held windows: {keep}"
    if row["held_gain_low"] is None:
        return ("train with the optimized weights: the law fitted on the held windows also predicts a gain; "
                "the proof is retraining (--validate)")
    gate = row.get("gate_recommended", row["recommended"]) if gate_only else row["recommended"]
    why = ("the calibrated gain's leave-one-out residual on trained unions" if row["gate_rule"] == "calibrated" else
           "the gain the fidelity protocol's cases needed")
    if gate == "uniform":
        return f"the held gain ({rel(row['held_gain'])}) does not clear {why}: {keep}"
    return (f"train with the optimized weights: they beat uniform on the held windows beyond the bootstrap interval "
            f"and clear {why}; the proof is retraining (--validate)")


def weights_document(row: dict) -> dict:
    """The weights file (README, "Mixture weights for a target suite"): what ablate recommends, per unit and per domain, with integer
    tokens summing to the budget; the optimized weights under `optimized`, for reference."""
    from ablate.optimize.optimization import by_domain

    def part(weights, tokens, epochs) -> dict:
        keep = [i for i, t in enumerate(tokens) if weights[i] > 0]
        return {"weights": {row["units"][i]: weights[i] for i in keep},
                "tokens": {row["units"][i]: tokens[i] for i in keep},
                "epochs": {row["units"][i]: epochs[i] for i in keep},
                "domains": {"weights": {d: w for d, w in by_domain(row["domains"], weights).items() if w > 0},
                            "tokens": {d: t for d, t in by_domain(row["domains"], tokens).items() if t > 0}}}

    doc = {"recommended": row["recommended"], "why": verdict(row), "objective": row["objective"],
           "route": row["route"], "budget_tokens": row["budget_tokens"],
           **part(row["weights"], row["tokens"], row["epochs"]),
           "optimized": {"note": "the optimizer's weights, for reference: ablate recommends them only when "
                                 "recommended is 'optimized'",
                         **part(row["optimized_weights"], row["optimized_tokens"], row["optimized_epochs"])}}
    if row.get("guards"):
        doc["guards"] = row["guards"]
    if row.get("validated"):
        doc["validation"] = {"optimized_union": row["union_optimized"], "uniform_union": row["union_uniform"],
                             "noise_band": row["noise_threshold"], "beats_uniform": row["beats_uniform"],
                             "verdict": row["verdict"]}
        if row.get("validated_candidates"):
            doc["validation"]["candidates"] = [
                {"rank": p["rank"], "source": p["source"], "realized_gain": p["realized_gain"],
                 "beats_uniform": p["beats_uniform"], "weights": {u: w for u, w in zip(row["units"], p["weights"])
                                                                  if w > 0}} for p in row["validated_candidates"]]
    doc["optimization_id"] = row["row_id"]
    return doc


def write_weights_file(row: dict, out: Path) -> None:
    import yaml

    doc = json.loads(json.dumps(weights_document(row)))  # plain floats: numpy's would stop the YAML dumper
    text = json.dumps(doc, indent=2) + "\n" if out.suffix.lower() == ".json" else yaml.safe_dump(doc, sort_keys=False)
    atomic_write_bytes(out, text.encode())


def show_validation(realized: dict) -> None:
    print_rows(["union", "weights", "held_objective"], realized["table"])
    r = realized["row"]
    say(f"retrained on the held windows: optimized union {r['union_optimized']:.4f}, uniform union "
        f"{r['union_uniform']:.4f} ({r['union_uniform'] - r['union_optimized']:+.4f} gain, "
        f"{rel(r['union_uniform'] - r['union_optimized'])}), best of {r['unions_compared']} trained "
        f"{r['union_best']:.4f}; noise band ±{r['noise_threshold']:.4f} (2 x the replicate's difference)")
    say_trained(realized.get("picks") or [])


optimize.typer_cls = OptimizeCommand  # cli/app.py registers the command with it
