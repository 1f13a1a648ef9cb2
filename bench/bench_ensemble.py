"""Benchmark 12: every mixture from cached token losses (the `ensemble` proxy) vs the merged sweep.

How to run:
    .venv/bin/python bench/bench_ensemble.py [--quick] [--study DIR] [--eval-set quotes] [--out FILE]

In one run, on one eval set of the bench study:
  merged    the real `run_sweep` over every mixture of 6 units (63 merged models, each evaluated), timed:
            seconds per mixture;
  ensemble  the same 63 mixtures scored from the members' cached per-token losses (scoring.ensemble.
            subset_nll_sums), after the cache is filled (its fill, one forward per member, is timed apart);
  16 units  every mixture of 16 members (65,535) on the same eval set from the cache. The study has fewer
            members, so the 16 rows are its real members' loss arrays tiled to 16: the arithmetic is exactly
            that of 16 members (the values are not a study's). The merged sweep's time for 65,535 mixtures is
            its measured seconds per mixture times 65,535 (an extrapolation, marked so).
The ratio is merged seconds per mixture / ensemble seconds per mixture, both measured here.
"""

from __future__ import annotations

import time

import numpy as np

import common


def main(argv=None) -> dict:
    p = common.base_parser(__doc__)
    p.add_argument("--eval-set", default="quotes", help="eval set both scorers read")
    args = p.parse_args(argv)
    from ablate.scoring import ensemble
    from ablate.scoring.sweep import run_sweep
    from ablate.study.context import load_study

    cfg, pool, study = common.open_study(args)
    units = common.unit_ids(cfg)
    eval_set = common.eval_set(args.eval_set, study)
    study = load_study(cfg, pool, [eval_set])
    n = 3 if args.quick else 6
    t0 = time.perf_counter()
    sweep = run_sweep(cfg, pool, units[:n], jobs=1, eval_names=[eval_set], force=True, log=lambda *a: None)
    merged_s = time.perf_counter() - t0
    members = [study.unit_member(u) for u in units]
    t0 = time.perf_counter()
    losses = np.stack([ensemble.member_nll(study, m)[0][eval_set] for m in members])
    fill_s = time.perf_counter() - t0
    masks = ensemble.all_masks(n)
    ens_s, _ = common.timed(ensemble.subset_nll_sums, losses[:n], masks)
    wide = np.tile(losses, (-(-16 // len(losses)), 1))[:16] if not args.quick else losses
    every = ensemble.all_masks(len(wide))
    wide_s, _ = common.timed(ensemble.subset_nll_sums, wide, every)
    per_merged, per_ens = merged_s / sweep["mixtures"], ens_s / len(masks)
    result = {"benchmark": "ensemble", "eval_set": eval_set, "eval_tokens": int(losses.shape[1]),
              "n": n, "mixtures": int(sweep["mixtures"]), "merged_sweep_s": merged_s,
              "merged_per_mixture_s": per_merged, "ensemble_s": ens_s, "ensemble_per_mixture_s": per_ens,
              "ratio": per_merged / per_ens, "cache_fill_s": fill_s, "cache_members": len(members),
              "wide_members": int(wide.shape[0]), "wide_mixtures": len(every), "wide_s": wide_s,
              "wide_goal_s": 60.0, "merged_wide_s_extrapolated": per_merged * len(every)}
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
