"""The report's figures (matplotlib, Agg backend, PNG).

Each function reads what it draws from the index, so a figure shows exactly what
`ablate sql` would return.
"""

from __future__ import annotations

import math
from pathlib import Path

from ablate.store.index import Index
from ablate.store.pool import Pool


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fidelity(pool: Pool, path: Path, budget: str = "sum") -> bool:
    """Merged vs union perplexity against one ground truth, one panel per eval set."""
    rows = Index(pool).rows("SELECT eval_set, k, merged_ppl, union_ppl FROM mixture_vs_union WHERE k >= 2 "
                            f"AND proxy = 'merged' AND uniform AND budget = '{budget}'")
    if not rows:
        return False
    fig = fidelity_figure(rows, budget)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return True


def fidelity_figure(rows: list[dict], budget: str):
    """The figure of plot_fidelity from its rows (eval_set, k, merged_ppl, union_ppl)."""
    plt = _plt()
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
        log_ticks(ax.xaxis)
        log_ticks(ax.yaxis)
        ax.set_title(name)
        ax.set_xlabel(f"union ppl (retrained, budget {budget})")
        ax.set_ylabel("merged ppl (proxy)")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(sets):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def log_ticks(axis, n: int = 4) -> None:
    """At most n labelled ticks on a log axis, plain numbers, minor ticks unlabelled.

    matplotlib labels the minor ticks of a log axis that spans less than a decade (perplexities 20-40:
    "2x10^1 3x10^1 4x10^1 ..."), and they run into each other on a 4-inch panel; over many decades its
    major labels crowd too. n ticks spaced evenly in log between the axis limits, rounded to 2 significant
    digits, never overlap at this size."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    lo, hi = sorted(axis.get_view_interval())
    if not (lo > 0 and hi > lo):
        return
    ticks = sorted({float(f"{lo * (hi / lo) ** (i / (n - 1)):.2g}") for i in range(n)})
    axis.set_major_locator(FixedLocator([t for t in ticks if lo <= t <= hi] or ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    axis.set_minor_formatter(NullFormatter())


def plot_cost(units: list[dict], mixes: list[dict], path: Path) -> None:
    """Cumulative energy as mixtures are added: pool (units once, then evals) vs retraining each.

    `units` and `mixes` are the study's own members and merges (report.unit_members, report.merged_evals)."""
    plt = _plt()
    unit_total = sum(u["energy_kwh"] or 0 for u in units)
    mean_unit = unit_total / max(1, len(units))
    sim, ret, s, r = [], [], unit_total, 0.0
    for m in mixes:
        s += m["energy_kwh"] or 0
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




def plot_budget(pool: Pool, path: Path, budget: str, recipe_id: str) -> bool:
    """Expected best union ppl after n mixtures vs cumulative cost (the study's recipe): simulation and retraining."""
    rows = Index(pool).rows(f"SELECT * FROM budget_curve WHERE budget = '{budget}' AND recipe_id = '{recipe_id}'")
    if not rows:
        return False
    plt = _plt()
    sets = sorted({r["eval_set"] for r in rows})
    fig, axes = plt.subplots(2, len(sets), figsize=(3.6 * len(sets), 6.4), squeeze=False)
    for col, name in enumerate(sets):
        pts = [r for r in rows if r["eval_set"] == name]
        for row, (unit, sim_key, ret_key) in enumerate((("energy (kWh)", "sim_kwh", "retrain_kwh"),
                                                         ("FLOPs", "sim_flops", "retrain_flops"))):
            ax = axes[row][col]
            for label, xk, yk, sk in (("simulation (proxy's pick)", sim_key, "proxy_expected_best_ppl", "proxy_sd"),
                                      ("retraining", ret_key, "retrain_expected_best_ppl", "retrain_sd")):
                x = [p[xk] for p in pts]
                y = [p[yk] for p in pts]
                sd = [p[sk] for p in pts]
                ax.plot(x, y, marker=".", label=label)
                ax.fill_between(x, [a - b for a, b in zip(y, sd)], [a + b for a, b in zip(y, sd)], alpha=0.15)
            ax.set_xscale("log")
            log_ticks(ax.xaxis, 3)  # these panels are 3.6 inches wide
            ax.set_xlabel(f"cumulative {unit}")
            if col == 0:
                ax.set_ylabel("expected best union ppl")
            if row == 0:
                ax.set_title(name)
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_growth(growth: list[dict], path: Path) -> None:
    """Amortized cost per mixture as units are added to the pool."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    n = [g["units"] for g in growth]
    ax.plot(n, [g["amortized_wh"] for g in growth], marker="o", label="simulation: Wh per mixture")
    ax.plot(n, [g["retrain_wh_per_mixture"] for g in growth], marker="s", label="retraining: Wh per mixture")
    ax.set_xlabel("units in the pool")
    ax.set_ylabel("energy per mixture (Wh)")
    ax.set_yscale("log")
    log_ticks(ax.yaxis)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
