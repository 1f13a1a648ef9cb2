"""Benchmark 6: how the cost of an ablation grows with the number of units n.

How to run:
    .venv/bin/python bench/bench_scaling.py [--quick] [--study DIR] [--out FILE]

Simulation (ablate): train one member per unit, then merge: n unit trainings, so its
training tokens grow as n. Retraining every mixture: one model per non-empty subset,
a k-subset costing k units' tokens, so Σ_k C(n,k)·k·U = n·2^(n-1)·U tokens.
Tokens come from the members' sidecars (train_tokens). Energy is measured per run by
ablate's meter (the study uses the "estimate" backend: process CPU seconds x W/thread +
RAM W x wall; this VM has no RAPL, so codecarbon would estimate too). The unit members
of the bench study are measured; for retraining we train every union of the first three
units (3 pairs, 1 triple), alternating with fresh trainings of those three units, and
measure them all in one time window (energy per token depends on how busy the shared
machine is): both sides are measured for n <= 3 and projected for larger n from the
measured energy per token. The seed is shared by both and left out. Linear fits (R^2) check simulation ~ n and retraining ~ n·2^(n-1).
"""

from __future__ import annotations

import itertools
import math

import common


def fit(x: list[float], y: list[float]) -> dict:
    """Least squares y = a·x + b with R^2."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx
    icpt = my - slope * mx
    ss_res = sum((b - (slope * a + icpt)) ** 2 for a, b in zip(x, y))
    ss_tot = sum((b - my) ** 2 for b in y) or 1e-300
    return {"slope": slope, "intercept": icpt, "r2": 1 - ss_res / ss_tot}


def main(argv=None) -> dict:
    args = common.base_parser(__doc__).parse_args(argv)
    from ablate.train.loop import train_member

    cfg, pool, study = common.open_study(args)
    units = common.unit_ids(cfg)
    # alternate domains, so the first three units are three domains
    per = cfg.units.units_per_domain
    units = [units[d * per + i] for i in range(per) for d in range(len(cfg.units.domains))]
    unit_meta = {u: pool.read_meta(study.unit_member(u)) for u in units}
    # k <= 3 (3 pairs, 1 triple: 9 units' tokens) unless running late or quick: pairs only
    measured_k = 2 if args.quick or (args.budget is not None and args.budget < 60) else 3
    # Energy per token depends on how busy the shared machine is, so the units are trained
    # again here (replicate 1: same unit, same token count, another data order), alternating
    # with the unions, and both sides are priced from this one time window.
    plan = [(u,) for u in units[:measured_k]] + [c for k in range(2, measured_k + 1)
                                                 for c in itertools.combinations(units[:measured_k], k)]
    plan = [x for pair in itertools.zip_longest(plan[:measured_k], plan[measured_k:]) for x in pair if x]
    runs = {combo: train_member(cfg, pool, list(combo), replicate=1 if len(combo) == 1 else 0, force=True,
                                log=lambda *a: None) for combo in plan}
    unions = {c: m for c, m in runs.items() if len(c) > 1}
    units_now = {c[0]: m for c, m in runs.items() if len(c) == 1}
    per_token = {side: {"j": common.median([m["energy_kwh"] * 3.6e6 / m["train_tokens"] for m in ms.values()]),
                        "s": common.median([m["wall_s"] / m["train_tokens"] for m in ms.values()])}
                 for side, ms in (("unit", units_now), ("union", unions))}
    unit_tokens = common.median([m["train_tokens"] for m in unit_meta.values()])

    def price(meta, tokens, side):
        """(kWh, s, measured?) of one training: measured in this window, or projected per token."""
        if meta is not None:
            return meta["energy_kwh"], meta["wall_s"], True
        return tokens * per_token[side]["j"] / 3.6e6, tokens * per_token[side]["s"], False

    rows = []
    for n in range(2, len(units) + 1):
        chosen = units[:n]
        sim_kwh = sim_s = re_kwh = re_s = 0.0
        sim_tokens = re_tokens = 0
        measured = True
        for u in chosen:  # simulation: one training per unit
            kwh, sec, ok = price(units_now.get(u), unit_tokens, "unit")
            sim_tokens += unit_tokens
            sim_kwh, sim_s, measured = sim_kwh + kwh, sim_s + sec, measured and ok
        for k in range(1, n + 1):  # retraining: one training per non-empty subset
            for combo in itertools.combinations(chosen, k):
                meta = units_now.get(combo[0]) if k == 1 else unions.get(tuple(combo))
                kwh, sec, ok = price(meta, k * unit_tokens, "unit" if k == 1 else "union")
                re_tokens += k * unit_tokens
                re_kwh, re_s, measured = re_kwh + kwh, re_s + sec, measured and ok
        assert re_tokens == n * 2 ** (n - 1) * unit_tokens
        rows.append({"n": n, "mixtures": 2 ** n - 1, "n_2^(n-1)": n * 2 ** (n - 1),
                     "sim_tokens": sim_tokens, "retrain_tokens": re_tokens, "token_ratio": re_tokens / sim_tokens,
                     "sim_wh": sim_kwh * 1000, "retrain_wh": re_kwh * 1000, "energy_ratio": re_kwh / sim_kwh,
                     "sim_train_s": sim_s, "retrain_train_s": re_s, "measured": measured})
    ns = [r["n"] for r in rows]
    growth = [r["n_2^(n-1)"] for r in rows]
    result = {
        "benchmark": "scaling", "unit_tokens": unit_tokens, "units": units,
        "measured_unions": {"+".join(c): {"tokens": m["train_tokens"], "wh": m["energy_kwh"] * 1000,
                                          "wall_s": m["wall_s"]} for c, m in unions.items()},
        "energy_method": next(iter(unit_meta.values()))["energy_method"],
        "per_token": per_token,
        "measured_units": {c[0]: {"tokens": m["train_tokens"], "wh": m["energy_kwh"] * 1000, "wall_s": m["wall_s"]}
                           for c, m in runs.items() if len(c) == 1},
        "rows": rows,
        "fit_sim_tokens_vs_n": fit(ns, [r["sim_tokens"] for r in rows]),
        "fit_sim_energy_vs_n": fit(ns, [r["sim_wh"] for r in rows]),
        "fit_retrain_tokens_vs_n2n": fit(growth, [r["retrain_tokens"] for r in rows]),
        "fit_retrain_energy_vs_n2n": fit(growth, [r["retrain_wh"] for r in rows]),
        "log2_token_ratio_per_n": [math.log2(r["token_ratio"]) for r in rows],  # = n - 1 exactly
    }
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
