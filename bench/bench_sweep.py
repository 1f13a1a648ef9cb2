"""Benchmark 4: the sweep's Gray-code running sum vs merging every mixture from scratch.

How to run:
    .venv/bin/python bench/bench_sweep.py [--quick] [--study DIR] [--eval-set quotes] [--out FILE]

For n = 6 and 8 units (all 2^n - 1 mixtures):
  merge    per mixture, the model the sweep evaluates is produced two ways, back to back
           (order alternating): RunningSum.move_to + load_into (what
           ablate.scoring.sweep does) vs merge_members from scratch + load_state (what scoring each
           mixture alone does). Ratio of mean merge time per mixture, and the median of
           per-mixture ratios.
  sweep    the real `run_sweep` (1 job, one eval set to fit the time budget), timed; its
           rows' merge_s give the merge share of the sweep. The from-scratch sweep time is
           derived: real sweep - its merge seconds + the from-scratch merge seconds.
With --budget, when the n = 8 sweep would not fit, its time is estimated from the n = 6
sweep's seconds per mixture (and marked "estimated_from_n" in the result).
"""

from __future__ import annotations

import time

import common


def merge_compare(pool, seed_id, members: list[str]) -> dict:
    from ablate.models.model import load_state, model_from_config, seed_config
    from ablate.scoring.merge import RunningSum, check_compatible, gray_code_order, merge_members

    model = model_from_config(seed_config(pool, seed_id))
    t0 = time.perf_counter()
    check_compatible(pool, members)  # the sweep worker's one-off check, charged to the running sum
    running = RunningSum(pool, members)
    setup = time.perf_counter() - t0
    run_s, scratch_s = [], []
    for i, mask in enumerate(gray_code_order(len(members))):
        chosen = [members[j] for j in range(len(members)) if mask >> j & 1]

        def incremental():
            running.move_to(set(chosen))
            running.load_into(model, "running average")

        def scratch():
            load_state(model, merge_members(pool, chosen), "merged weights")

        pair = [("run", incremental), ("scratch", scratch)]
        for name, fn in pair if i % 2 == 0 else pair[::-1]:
            dt = common.timed(fn)[0]
            (run_s if name == "run" else scratch_s).append(dt)
    n_mix = len(run_s)
    return {"mixtures": n_mix, "running_setup_s": setup,
            "running_per_mixture_s": (sum(run_s) + setup) / n_mix, "scratch_per_mixture_s": sum(scratch_s) / n_mix,
            "ratio": sum(scratch_s) / (sum(run_s) + setup),
            "median_pair_ratio": common.paired_ratio(scratch_s, run_s),
            "running_total_s": sum(run_s) + setup, "scratch_total_s": sum(scratch_s)}


def real_sweep(cfg, pool, units: list[str], eval_set: str) -> dict:
    from ablate.scoring.sweep import run_sweep
    from ablate.store.index import Index

    t0 = time.perf_counter()
    out = run_sweep(cfg, pool, units, jobs=1, eval_names=[eval_set], force=True, log=lambda *a: None)
    wall = time.perf_counter() - t0
    # force=True rescored every mixture of these units and the newest row wins: these are this run's
    _, rows = Index(pool).query("SELECT mixture, merge_s, eval_s FROM mixture_perplexity "
                                "WHERE method = 'merged' AND eval_set = ?", [eval_set])
    mine = [r for r in rows if set(r[0]) <= set(units)]
    merge_s, eval_s = sum(r[1] or 0 for r in mine), sum(r[2] for r in mine)
    return {"mixtures": out["mixtures"], "scored": out["scored"], "rows": len(mine), "sweep_s": wall,
            "merge_s": merge_s, "eval_s": eval_s, "merge_share_of_sweep": merge_s / wall,
            "merge_share_of_merge_plus_eval": merge_s / max(1e-12, merge_s + eval_s)}


def main(argv=None) -> dict:
    p = common.base_parser(__doc__)
    p.add_argument("--eval-set", default="quotes", help="eval set the real sweep scores (one, for time)")
    args = p.parse_args(argv)
    cfg, pool, study = common.open_study(args)
    units = common.unit_ids(cfg)
    eval_set = common.eval_set(args.eval_set, study)
    result = {"benchmark": "sweep", "eval_set": eval_set,
              "eval_tokens_per_mixture": int(study.eval_tokens[eval_set].size), "n": {}}
    t0 = time.perf_counter()
    per_mixture, n_prev = None, None
    for n in ((3,) if args.quick else (6, 8)):
        members = [study.unit_member(u) for u in units[:n]]
        merge = merge_compare(pool, study.seed["model_id"], members)
        left = None if args.budget is None else args.budget - (time.perf_counter() - t0)
        if per_mixture is not None and left is not None and per_mixture * (2 ** n - 1) > left:
            # Running late (the shared machine is slow today): price the real sweep from the
            # previous n's seconds per mixture instead of running it; flagged as estimated.
            sweep = {"estimated_from_n": n_prev, "mixtures": 2 ** n - 1,
                     "sweep_s": per_mixture * (2 ** n - 1), "merge_s": merge["running_total_s"]}
            sweep["merge_share_of_sweep"] = sweep["merge_s"] / sweep["sweep_s"]
        else:
            sweep = real_sweep(cfg, pool, units[:n], eval_set)
            per_mixture = (sweep["sweep_s"] - sweep["merge_s"]) / sweep["mixtures"]
        n_prev = n
        sweep["scratch_sweep_s_derived"] = sweep["sweep_s"] - sweep["merge_s"] + merge["scratch_total_s"]
        sweep["sweep_time_ratio_derived"] = sweep["scratch_sweep_s_derived"] / sweep["sweep_s"]
        result["n"][n] = {"merge": merge, "sweep": sweep}
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
