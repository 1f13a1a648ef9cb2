"""The verdict: how faithful the proxy is, and what it saved.

How to run:
    ablate report --out report/     # report.md + fidelity.png + cost.png

Everything here is read from the index views (`proxy_fidelity`,
`mixture_vs_union`) and the `models` / `mixture_perplexity` tables, so the
numbers in the report are the numbers a user gets from `ablate sql`.

Cost accounting. Simulation = training one member per unit + merging and
evaluating every mixture. Retraining = training every mixture's union (k units →
k× the unit's tokens). Unions that were trained are measured; for the rest of
the 2^n − 1 mixtures the retraining cost is extrapolated as k × the mean unit
cost, and the report says so.
"""

from __future__ import annotations

import math
from pathlib import Path

from ablate.index import Index
from ablate.pool import Pool, atomic_write_bytes


def _rows(pool: Pool, sql: str) -> list[dict]:
    cols, rows = Index(pool).query(sql)
    return [dict(zip(cols, r)) for r in rows]


def fidelity(pool: Pool) -> list[dict]:
    return _rows(pool, "SELECT * FROM proxy_fidelity")


def costs(pool: Pool) -> dict:
    """Measured and extrapolated costs of simulating vs retraining all mixtures."""
    units = _rows(pool, "SELECT units[1] AS unit, energy_kwh, wall_s, flops FROM models WHERE kind = 'unit'")
    unions = _rows(pool, "SELECT len(units) AS k, energy_kwh, wall_s, flops FROM models WHERE kind = 'union'")
    merged = _rows(pool, "SELECT k, sum(energy_kwh) AS energy_kwh, sum(eval_s + coalesce(merge_s, 0)) AS wall_s, "
                         "sum(flops) AS flops, count(DISTINCT mixture) AS n FROM mixture_perplexity "
                         "WHERE method = 'merged' AND uniform GROUP BY k ORDER BY k")
    n = len({u["unit"] for u in units})
    out = {"n_units": n, "n_mixtures": sum(r["n"] for r in merged), "unions_trained": len(unions)}
    for key in ("energy_kwh", "wall_s", "flops"):
        unit_total = sum(u[key] or 0 for u in units)
        unit_mean = unit_total / max(1, len(units))
        sim = unit_total + sum(r[key] or 0 for r in merged)
        measured_unions = sum(u[key] or 0 for u in unions)
        # every mixture of k units retrained costs ~k unit trainings: sum_k C(n,k) k = n 2^(n-1)
        all_mixtures = unit_mean * n * 2 ** (n - 1) if n else 0.0
        out[key] = {"simulation": sim, "unions_measured": measured_unions, "unit_trainings": unit_total,
                    "retrain_all_extrapolated": all_mixtures,
                    "ratio": all_mixtures / sim if sim else math.nan}
    return out


def verdict_markdown(pool: Pool) -> str:
    lines = ["## Proxy fidelity (merged vs union, multi-unit mixtures)", "",
             "| eval set | n | Pearson (log ppl) | Spearman | top-1 | regret | proxy's best | true best |",
             "|---|---|---|---|---|---|---|---|"]
    for r in fidelity(pool):
        lines.append(f"| {r['eval_set']} | {r['n_mixtures']} | {_num(r['pearson_log_ppl'])} | "
                     f"{_num(r['spearman_log_ppl'])} | {'yes' if r['top1_agree'] else 'no'} | "
                     f"{_num(100 * r['regret'], 2)} % | {'+'.join(r['proxy_best'])} | {'+'.join(r['true_best'])} |")
    c = costs(pool)
    lines += ["", f"## Cost: simulation vs retraining ({c['n_units']} units, {c['n_mixtures']} mixtures scored, "
                  f"{c['unions_trained']} unions trained)", "",
              "| | simulation (units + merges + evals) | unions trained here (measured) | "
              "retraining all mixtures (extrapolated: k x mean unit cost) | ratio |", "|---|---|---|---|---|"]
    for key, label, scale in (("energy_kwh", "energy (Wh)", 1000), ("wall_s", "seconds", 1), ("flops", "FLOPs", 1)):
        v = c[key]
        lines.append(f"| {label} | {_num(v['simulation'] * scale)} | {_num(v['unions_measured'] * scale)} | "
                     f"{_num(v['retrain_all_extrapolated'] * scale)} | {_num(v['ratio'], 2)}x |")
    methods = _rows(pool, "SELECT DISTINCT energy_method FROM models WHERE kind <> 'seed'")
    lines += ["", "Energy method: " + "; ".join(m["energy_method"] for m in methods)]
    return "\n".join(lines) + "\n"


def _num(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.3e}"


def plot_fidelity(pool: Pool, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(pool, "SELECT eval_set, k, merged_ppl, union_ppl FROM mixture_vs_union WHERE k >= 2")
    sets = sorted({r["eval_set"] for r in rows})
    cols = max(1, min(3, len(sets)))
    nrows = max(1, math.ceil(len(sets) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.8 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, sets):
        pts = [r for r in rows if r["eval_set"] == name]
        for k in sorted({p["k"] for p in pts}):
            sel = [p for p in pts if p["k"] == k]
            ax.scatter([p["union_ppl"] for p in sel], [p["merged_ppl"] for p in sel], label=f"k={k}", s=22)
        lo = min(min(p["union_ppl"], p["merged_ppl"]) for p in pts)
        hi = max(max(p["union_ppl"], p["merged_ppl"]) for p in pts)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="identity")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("union ppl (retrained)")
        ax.set_ylabel("merged ppl (proxy)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(sets):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost(pool: Pool, path: Path) -> None:
    """Cumulative energy as mixtures are added: pool (units once, then evals) vs retraining each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit_kwh = _rows(pool, "SELECT coalesce(sum(energy_kwh), 0) AS e, count(*) AS n FROM models WHERE kind = 'unit'")[0]
    mixes = _rows(pool, "SELECT mixture, k, sum(energy_kwh) AS e FROM mixture_perplexity WHERE method = 'merged' "
                        "AND uniform GROUP BY mixture, k ORDER BY k, array_to_string(mixture, ',')")
    mean_unit = unit_kwh["e"] / max(1, unit_kwh["n"])
    sim, ret, s, r = [], [], unit_kwh["e"], 0.0
    for m in mixes:
        s += m["e"] or 0
        r += m["k"] * mean_unit
        sim.append(s * 1000)
        ret.append(r * 1000)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    x = list(range(1, len(mixes) + 1))
    ax.plot(x, sim, label="simulation: unit members + merge/eval")
    ax.plot(x, ret, label="retraining each mixture (k x unit cost)")
    ax.set_xlabel("mixtures evaluated (by size k)")
    ax.set_ylabel("cumulative energy (Wh)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(pool: Pool, out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = "# ablate report\n\n" + verdict_markdown(pool)
    if fidelity(pool):
        plot_fidelity(pool, out / "fidelity.png")
        text += "\n![merged vs union perplexity](fidelity.png)\n"
    plot_cost(pool, out / "cost.png")
    text += "\n![cost of simulation vs retraining](cost.png)\n"
    path = out / "report.md"
    atomic_write_bytes(path, text.encode())
    return path
