"""Benchmark 14: a whole `ablate optimize` (no training) at 16 units, by route, against one gradient pass.

How to run:
    .venv/bin/python bench/bench_optimize_route.py [--quick] [--study DIR] [--target quotes] [--out FILE]
    (--quick: the tiny quick study, its first eval set: a smoke test of the harness)

Not in bench/run.py: it builds its own study, the bench's demo architecture with 4 units per domain (16 units of
16,384 tokens, 40 kB eval sets as in the demo; built once, about 40 s). The target is one no unit covers, so with
no --route `ablate optimize` takes the ensemble route and runs the merged route first for its top candidate (the
partner, held at #2 of the shortlist: optimize/defaults.py). In one run, with the members' token-loss cache
filled first (timed apart: a one-off, shared with `search` and `sweep`):
  default   run_optimization as `ablate optimize --target T` runs it: the merged partner, then the ensemble route
  ensemble  the ensemble route alone (`--route ensemble`)
  merged    the merged route alone (`--route merged`)
  reference one forward + backward of the seed over the target's fit windows (what any gradient step pays)
Each is reported in seconds and as a multiple of the reference. The goal: optimization itself under 60 s for
16 units on the ensemble route.
"""

from __future__ import annotations

import common


def reference_seconds(cfg, pool, target: str) -> float:
    """One forward + backward of the seed over the target's fit windows (median of 3)."""
    from ablate.models.model import load_member
    from ablate.optimize.losses import set_nll
    from ablate.optimize.protocol import split_windows
    from ablate.study.context import load_study

    study = load_study(cfg, pool, [target])
    fit = split_windows(study, [target], cfg.optimize.fit_fraction, cfg.optimize.split_seed)[target]["fit"]
    model = load_member(pool, study.seed["model_id"])
    times = []
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        times.append(common.timed(set_nll, model, fit, cfg.eval.batch_size, grad=True)[0])
    return common.median(times)


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__)
    parser.add_argument("--target", default="quotes", help="an eval set no unit covers")
    args = parser.parse_args(argv)
    from ablate.optimize.optimization import plan_optimization, run_optimization
    from ablate.scoring.ensemble import member_nll
    from ablate.study.context import load_study

    if not args.quick:
        args.size = "16units"  # common.study_tree: the bench study with 4 units per domain, 40 kB eval sets
    cfg, pool, every = common.open_study(args)
    names = [ev["domain"] for ev in every.evals]
    target = args.target if args.target in names else names[0]  # the quick study has no eval-only set
    study = load_study(cfg, pool, [target])
    units = common.unit_ids(cfg)
    fill, _ = common.timed(lambda: [member_nll(study, study.unit_member(u)) for u in units])
    cases = {}
    for name, route in (("default", None), ("ensemble", "ensemble"), ("merged", "merged")):
        plan = plan_optimization(cfg, pool, [target], None, "mean", None, ",".join(units), None, route)
        seconds, result = common.timed(run_optimization, cfg, pool, plan)
        cases[name] = {"route": plan.route, "partner": plan.partner, "seconds": seconds,
                       "route_seconds": result["seconds"]}
    ref = reference_seconds(cfg, pool, target)
    for c in cases.values():
        c["x_reference"] = c["seconds"] / ref
    result = {"benchmark": "optimize-route", "units": len(units), "target": target, "cache_fill_s": fill,
              "reference_fwd_bwd_s": ref, "cases": cases,
              "goal_ensemble_route_under_60_s": cases["ensemble"]["seconds"] < 60,
              "default_under_60_s": cases["default"]["seconds"] < 60}
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
