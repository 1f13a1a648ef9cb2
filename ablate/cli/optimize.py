"""`ablate optimize`: mixture weights for a target suite, ready for a training config, proven by retraining.

How to run:
    ablate optimize --target quotes                                   # merged route, all units, one unit's budget
    ablate optimize --target fiction,bible,quotes --objective worst --out weights.yaml
    ablate optimize --target quotes --max-loss fiction:2 --tokens 400000 --max-epochs 2
    ablate optimize --target quotes --validate                        # + train the weighted and the uniform union

The command plans and runs the optimization (ablate/optimize/optimization.py: the objective, the repetition
caps for the budget the weights are meant for, the merged or regression route, the row in `optimizations`),
prints the weights with their tokens and epochs, writes `--out`, and with `--validate` hands over to the floor
that may both optimize and train (ablate/workflows/optimize_runs.py): it trains the weighted union at that
budget, the uniform union and a replicate of the weighted one (the noise band), and measures all of them on
the held windows the optimizer never saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli.shared import (ConfigOpt, DryOpt, MaxLossOpt, ObjectiveOpt, SetOpt, TargetOpt, TargetWeightsOpt,
                               open_study, print_rows, say)
from ablate.core.errors import UsageError
from ablate.store.pool import atomic_write_bytes

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
             out: Annotated[Optional[Path], typer.Option("--out", help="weights file: .json, .yaml or .yml")] = None,
             route: Annotated[str, typer.Option(
                 "--route", help="merged (gradients through the merge, no union needed), ensemble (exact gradients "
                                 "of the members' per-token mixture, from cached token losses) or regression (a law "
                                 "fitted on the trained unions)")] = "merged",
             validate: Annotated[bool, typer.Option(
                 "--validate", help="train the weighted union, the uniform union and a replicate; compare")] = False,
             config: ConfigOpt = None, set_: SetOpt = None, dry_run: DryOpt = False):
    """Continuous mixture weights for an objective over eval sets, by gradients through the merge."""
    overrides = list(set_ or []) + [f"optimize.{k}={v}" for k, v in
                                    (("max_epochs", max_epochs), ("floor", floor), ("steps", steps)) if v is not None]
    cfg, pool = open_study(config, overrides, dry_run)
    if out is not None and out.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise UsageError(f"--out must end in .json, .yaml or .yml (got {out.name!r})")
    from ablate.optimize.optimization import plan_optimization, run_optimization
    from ablate.workflows.optimize_runs import validate_optimization

    plan = plan_optimization(cfg, pool, target, target_weights, objective, max_loss, units, tokens, route)
    result = run_optimization(cfg, pool, plan)
    show(result)
    if out is not None:
        write_weights_file(result, out)
        say(f"weights written to {out}")
    if validate:
        show_validation(validate_optimization(cfg, pool, plan, result))


def show(result: dict) -> None:
    row, held = result["row"], result["held"]
    print_rows(["unit", "weight", "tokens", "epochs"],
               [{"unit": u, "weight": round(w, 4), "tokens": t, "epochs": round(e, 3)}
                for u, w, t, e in zip(row["units"], row["weights"], row["tokens"], row["epochs"])])
    interval = (f" [{held['gain_low']:+.4f}, {held['gain_high']:+.4f}] (95 %, bootstrap over held windows)"
                if held["gain_low"] is not None else " (the law refitted on the held windows' values; no interval)")
    say(f"{row['route']} route, objective {row['objective']} (log ppl; lower is better), budget "
        f"{row['budget_tokens']:,} tokens: fit windows {row['fit_optimized']:.4f} vs uniform {row['fit_uniform']:.4f}; "
        f"held windows {row['held_optimized']:.4f} vs uniform {row['held_uniform']:.4f}, gain {held['gain']:+.4f}"
        + interval)
    error = result.get("proxy_error")
    if error is not None:
        say(f"the proxy's own error on this objective: +-{error['rms']:.4f} (root mean square over "
            f"{error['unions']} trained unions' gains over the uniform union, fit windows)")
    say(verdict(row, held, error))
    say(f"stored as {row['row_id']} in the `optimizations` table ({result['seconds']:.1f} s, "
        f"{(row['energy_kwh'] or 0) * 1000:.3f} Wh [{row['energy_method']}])")


def verdict(row: dict, held: dict, error: dict | None) -> str:
    """What to train with, and why (the row's `recommended`)."""
    if not held["guards_held"]:
        return "a --max-loss guard does not hold on the held windows: keep the uniform weights"
    if not held["resolved"]:
        return ("nothing beats uniform beyond what the proxy can resolve on the held windows: "
                "train with the uniform weights (the optimized ones are stored for reference)")
    if held["gain_low"] is None:
        return "the law fitted on the held windows also predicts a gain; the proof is retraining (`--validate`)"
    if row["recommended"] == "uniform":
        return ("the held gain is within the proxy's own error on trained unions: train with the uniform weights "
                "(the optimized ones are stored for reference)")
    if error is None:
        return ("the optimized weights beat uniform on the held windows beyond the bootstrap interval, which "
                "measures window noise only: train the uniform union and a few others (`ablate suggest-unions`) "
                "to check the gain against the proxy's own error; the proof is retraining (`--validate`)")
    return ("the optimized weights beat uniform on the held windows beyond the bootstrap interval and the proxy's "
            "error; the proof is retraining (`--validate`)")


def write_weights_file(result: dict, out: Path) -> None:
    """The weights as a training config wants them: unit -> weight, tokens and epochs at the budget."""
    import yaml

    row = result["row"]
    doc = {"objective": row["objective"], "recommended": row["recommended"], "budget_tokens": row["budget_tokens"],
           "weights": {u: w for u, w in zip(row["units"], row["weights"]) if w > 0},
           "tokens": {u: t for u, t in zip(row["units"], row["tokens"]) if t > 0},
           "epochs": {u: e for u, e in zip(row["units"], row["epochs"]) if e > 0},
           "optimization_id": row["row_id"]}
    text = json.dumps(doc, indent=2) + "\n" if out.suffix.lower() == ".json" else yaml.safe_dump(doc, sort_keys=False)
    atomic_write_bytes(out, text.encode())


def show_validation(realized: dict) -> None:
    print_rows(["union", "weights", "held_objective"], realized["table"])
    r = realized["row"]
    say(f"retrained on the held windows: optimized union {r['union_optimized']:.4f}, uniform union "
        f"{r['union_uniform']:.4f} ({r['union_uniform'] - r['union_optimized']:+.4f} gain), best of "
        f"{r['unions_compared']} trained {r['union_best']:.4f}; noise band +-{r['noise_threshold']:.4f} "
        f"(2 x the replicate's difference)")
