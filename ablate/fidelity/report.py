"""The verdict: how faithful the proxy is, and what it saved.

How to run:
    ablate report --out report/     # report.md + fidelity-<truth>.png + cost.png + budget-<truth>.png

Sections: proxy fidelity per ground truth, cost, budget curves, mixture searches, optimized mixtures
(`ablate optimize`: recommended weights, predicted vs realized gain, the verdict), eval sets, a growing pool.

Everything here is read from the index views (`proxy_fidelity`,
`mixture_vs_union`) and the `models` / `mixture_perplexity` tables, so the
numbers in the report are the numbers a user gets from `ablate sql`.

Cost accounting. Simulation = training one member per unit + merging and
evaluating every mixture. Retraining = training every mixture's union (k units →
k× the unit's tokens). Unions that were trained are measured; for the rest of
the 2^n − 1 mixtures the retraining cost is extrapolated as k × the mean unit
cost, and the report says so. Only the study's own members are priced: those of
its seed and training recipe (`Priced`), and merges of them; members that another
recipe (other epochs, lr) left in the pool are another study's spending.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ablate.core.config import StudyConfig
from ablate.core.errors import UsageError
from ablate.core.formats import num, num_pct, ratio, rel, rel_band, yes_no
from ablate.data.evalsets import task_sidecars
from ablate.fidelity.markdown import markdown_table
from ablate.scoring import proxies
from ablate.scoring.merge import merge_id
from ablate.scoring.tasks import accuracy_interval, describe_accuracy
from ablate.scoring.uncertainty import DEFAULT_RESAMPLES
from ablate.store.index import Index
from ablate.store.pool import Pool, atomic_write_bytes
from ablate.store.schema import MIN_MIXTURES


@dataclass(frozen=True)
class Priced:
    """Whose training the report prices: the study's seed and recipe (models.seed_id, models.recipe_id)."""

    seed_id: str | None
    recipe_id: str
    epochs: int
    lr: float


def priced(cfg: StudyConfig, pool: Pool) -> Priced:
    from ablate.models.model import find_seed
    from ablate.study.context import study_recipe_id

    try:
        seed = find_seed(pool)["model_id"]
    except UsageError:  # nothing trained yet: an empty report, not an error
        seed = None
    return Priced(seed, study_recipe_id(cfg), cfg.train.epochs, cfg.train.lr)


def fidelity(pool: Pool) -> list[dict]:
    return Index(pool).rows("SELECT * FROM proxy_fidelity")


def unit_members(pool: Pool, scope: Priced) -> list[dict]:
    """The study's unit members (replicate 0 of its seed and recipe), oldest first."""
    return Index(pool).rows("SELECT units[1] AS unit, model_id, energy_kwh, wall_s, flops FROM models "
                            "WHERE kind = 'unit' AND coalesce(replicate, 0) = 0 AND seed_id = ? AND recipe_id = ? ORDER BY created_at",
                            [scope.seed_id, scope.recipe_id])


def merged_evals(pool: Pool, members: list[dict]) -> list[dict]:
    """Cost per uniform mixture of merging and evaluating the study's own members (a merge's id names them)."""
    member = {m["unit"]: m["model_id"] for m in members}
    rows = Index(pool).rows("SELECT mixture, k, model_id, sum(energy_kwh) AS energy_kwh, "
                            "sum(eval_s + coalesce(merge_s, 0)) AS wall_s, sum(flops) AS flops FROM mixture_perplexity "
                            "WHERE method = 'merged' AND uniform GROUP BY mixture, k, model_id "
                            "ORDER BY k, array_to_string(mixture, ',')")
    return [r for r in rows if all(u in member for u in r["mixture"])
            and r["model_id"] == merge_id([member[u] for u in r["mixture"]], [1.0 / r["k"]] * r["k"])]


def costs(pool: Pool, scope: Priced) -> dict:
    """Measured and extrapolated costs of simulating vs retraining all mixtures, for the study's members."""
    units = unit_members(pool, scope)
    unions = Index(pool).rows("SELECT len(units) AS k, energy_kwh, wall_s, flops FROM models WHERE kind = 'union' "
                              "AND seed_id = ? AND recipe_id = ?", [scope.seed_id, scope.recipe_id])
    merged = merged_evals(pool, units)
    n = len({u["unit"] for u in units})
    out = {"n_units": n, "n_mixtures": len(merged), "unions_trained": len(unions)}
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


def growth(pool: Pool, scope: Priced) -> list[dict]:
    """Amortized cost per mixture as the pool grew, the study's units taken in the order they were trained."""
    units = unit_members(pool, scope)
    evals = merged_evals(pool, units)
    out, have, train = [], set(), 0.0
    mean_unit = sum(u["energy_kwh"] for u in units) / max(1, len(units))
    for u in units:
        have.add(u["unit"])
        train += u["energy_kwh"]
        n = len(have)
        scored = [e["energy_kwh"] or 0 for e in evals if set(e["mixture"]) <= have]
        mixtures = 2 ** n - 1
        out.append({"units": n, "mixtures": mixtures, "scored": len(scored),
                    "amortized_wh": 1000 * (train + sum(scored)) / mixtures,
                    "retrain_wh_per_mixture": 1000 * mean_unit * n * 2 ** (n - 1) / mixtures})
    return out


def _quality_cells(q: dict) -> list[str]:
    return [num(q["pearson"], 3), num(q["spearman"], 3),
            yes_no(q["top1"]) + (" (within noise)" if q["top1_within_noise"] and not q["top1"] else ""),
            num_pct(q["regret"]), num(q["pairwise_agreement"], 3)]


def truth_order(pool: Pool) -> list[str]:
    """Ground truths present in the pool, the protocol's recommended question first."""
    from ablate.study.budgets import DEFAULT_TRUTH

    have = {r["budget"] for r in Index(pool).rows("SELECT DISTINCT coalesce(budget, 'sum') AS budget FROM "
                                                  "mixture_perplexity WHERE method = 'union'")}
    return sorted(have, key=lambda b: (b != DEFAULT_TRUTH, b != "sum", b))


def fidelity_markdown(pool: Pool) -> list[str]:
    from ablate.fidelity.calibrate import fidelity as proxy_fidelity
    from ablate.study.budgets import QUESTIONS

    lines = []
    for budget in truth_order(pool):
        rows = proxy_fidelity(pool, budget)
        if not rows:
            continue
        question = QUESTIONS.get(budget.split("=")[0], budget)
        lines += [f"## Proxy fidelity against the `{budget}` ground truth: {question}", "",
                  "Multi-unit uniform mixtures with a trained union. Fitted proxies (calibrated, regression) "
                  "leave-one-union-out on this pool; FIDELITY.md has the protocol on studies they were not tuned on. "
                  "Noise floor: sd of log union ppl across replicate unions; pairs closer than 2·√2·sd are not "
                  "counted as rank errors.", ""]
        lines += markdown_table(
            ["eval set", "n", "noise sd", "proxy", "Pearson", "Spearman", "top-1", "regret", "pairwise (beyond noise)"],
            ([r["eval_set"], r["n"], num(r["noise_sd"], 3), r["proxy"], *_quality_cells(r)]
             for r in sorted(rows, key=lambda r: (r["eval_set"], r["proxy"] != "merged", r["proxy"]))))
        lines.append("")
    return lines or _raw_fidelity_markdown(pool)


def _raw_fidelity_markdown(pool: Pool) -> list[str]:
    rows = [r for r in fidelity(pool) if r["proxy"] == "merged"]
    few = [f"n/a: fewer than {MIN_MIXTURES} mixtures with a trained union, too few to rank.", ""]
    lines = ["## Proxy fidelity (merged vs union, multi-unit mixtures)", "",
             *(few if any(r["n_mixtures"] < MIN_MIXTURES for r in rows) else [])]
    return lines + markdown_table(
        ["ground truth", "eval set", "n", "Pearson (log ppl)", "Spearman", "top-1", "regret", "proxy's best", "true best"],
        ([r["budget"], r["eval_set"], r["n_mixtures"], num(r["pearson_log_ppl"]), num(r["spearman_log_ppl"]),
          yes_no(r["top1_agree"]), num_pct(r["regret"]), "+".join(r["proxy_best"]), "+".join(r["true_best"])]
         for r in rows))


def cost_markdown(pool: Pool, scope: Priced) -> list[str]:
    c = costs(pool, scope)
    lines = ["", f"## Cost: simulation vs retraining ({c['n_units']} units, {c['n_mixtures']} mixtures scored, "
                 f"{c['unions_trained']} unions trained)", "",
             f"Priced: this study's members only (seed {scope.seed_id}, training recipe {scope.recipe_id}: "
             f"train.epochs {scope.epochs}, train.lr {scope.lr:g}) and merges of them; members another recipe "
             "left in the pool are not counted (`ablate sql \"SELECT * FROM ablation_cost WHERE recipe_id = "
             f"'{scope.recipe_id}'\"`).", "",
             "| | simulation (units + merges + evals) | unions trained here (measured) | "
             "retraining all mixtures (extrapolated: k x mean unit cost) | ratio |", "|---|---|---|---|---|"]
    for key, label, scale in (("energy_kwh", "energy (Wh)", 1000), ("wall_s", "seconds", 1), ("flops", "FLOPs", 1)):
        v = c[key]
        lines.append(f"| {label} | {num(v['simulation'] * scale)} | {num(v['unions_measured'] * scale)} | "
                     f"{num(v['retrain_all_extrapolated'] * scale)} | {ratio(v['ratio'])} |")
    methods = Index(pool).rows("SELECT DISTINCT energy_method FROM models WHERE kind <> 'seed' AND recipe_id = ? "
                               "ORDER BY 1", [scope.recipe_id])
    lines += ["", "Energy method: " + ("; ".join(m["energy_method"] for m in methods) or "n/a (nothing trained)")]
    return lines


def budget_markdown(pool: Pool, scope: Priced) -> list[str]:
    rows = Index(pool).rows("SELECT * FROM budget_curve WHERE recipe_id = ?", [scope.recipe_id])
    if not rows:
        return []

    def shown(r: dict) -> bool:  # n = 1, half the largest n and the largest, per truth and eval set
        big = max(x["n"] for x in rows if x["eval_set"] == r["eval_set"] and x["budget"] == r["budget"])
        return r["n"] in (1, max(1, big // 2), big)

    lines = ["", "## Budget curves (expected best union ppl after n random mixtures; Dodge et al. 2019)", ""]
    lines += markdown_table(
        ["ground truth", "eval set", "n", "retraining: E[best] ± sd", "its energy (Wh)",
         "simulation: E[true ppl of proxy's pick] ± sd", "its energy (Wh)"],
        ([r["budget"], r["eval_set"], r["n"], f"{num(r['retrain_expected_best_ppl'])} ± {num(r['retrain_sd'], 3)}",
          num(1000 * (r["retrain_kwh"] or 0)), f"{num(r['proxy_expected_best_ppl'])} ± {num(r['proxy_sd'], 3)}",
          num(1000 * (r["sim_kwh"] or 0))] for r in rows if shown(r)))
    return lines + ["", f"Full curves: `ablate sql \"SELECT * FROM budget_curve WHERE recipe_id = '{scope.recipe_id}'\"`."]


def search_markdown(pool: Pool) -> list[str]:
    rows = Index(pool).rows("SELECT * FROM searches WHERE search_id IN (SELECT arg_max(search_id, created_at) "
                            "FROM searches GROUP BY target) ORDER BY target, rank")
    if not rows:
        return []
    return ["", "## Mixture search (latest per target)", ""] + markdown_table(
        ["target", "method", "truth", "rank", "mixture", "weights", "proxy ppl", "union ppl", "union rank", "validated"],
        ([r["target"], r["method"], r.get("budget") or "sum", r["rank"], "+".join(r["mixture"]),
          ",".join(f"{w:.2f}" for w in r["weights"]), num(r["proxy_ppl"]), num(r["union_ppl"]),
          f"{r['union_rank'] or '-'} of {r['n_unions_known']}", "yes" if r["validated"] else "no"]
         for r in rows if r["rank"] <= 5 or r["validated"]))


def optimize_markdown(pool: Pool) -> list[str]:
    """`ablate optimize`'s rows (newest first, superseded ones left out): what it recommends, the gain it predicted
    on the held windows, and after --validate the retrained gain, the noise band and the verdict (gains in % of
    perplexity over the uniform mixture)."""
    rows = Index(pool).rows("SELECT * FROM optimizations WHERE superseded_by IS NULL ORDER BY created_at DESC")
    if not rows:
        return []
    return ["", "## Optimized mixtures", "",
            "`ablate optimize`: the weights it recommends (uniform where the gate says uniform) and the optimizer's "
            "own, the gain predicted on held windows, and after `--validate` the gain realized by retraining with "
            "the noise band (2 x a replicate's difference) and the verdict.", ""] + markdown_table(
        ["objective", "route", "recommended", "weights", "optimized weights", "predicted gain (held)",
         "realized gain (retrained)", "noise band", "beats uniform beyond the noise band"],
        # rows from before optimized_weights: the optimized weights are the weights
        ([r["objective"], r["route"], r["recommended"], _weights(r["units"], r["weights"]),
          _weights(r["units"], r.get("optimized_weights") or r["weights"]), rel(r["held_gain"]),
          *([rel(r.get("realized_gain")), rel_band(r["noise_threshold"]), yes_no(r.get("beats_uniform"))]
            if r["validated"] else ["not validated", "-", "-"])] for r in rows))


def _weights(units: list[str], weights: list[float]) -> str:
    return ", ".join(f"{u} {w:.3f}" for u, w in zip(units, weights) if w > 0)


def eval_sets_markdown(pool: Pool) -> list[str]:
    """Every eval set with where it came from and its contamination: documents whose exact text is
    also a document inside a training unit (counted by `units split`)."""
    rows = Index(pool).rows("SELECT unit_id, source, n_docs, n_tokens, n_bytes, contaminated_docs FROM units "
                            "WHERE kind = 'eval' ORDER BY unit_id")
    if not rows:
        return []
    return ["", "## Eval sets and contamination", ""] + markdown_table(
        ["eval set", "source", "documents", "tokens", "bytes", "documents also in a training unit"],
        ([r["unit_id"].removeprefix("eval-"), r["source"] or "corpus", r["n_docs"], r["n_tokens"], r["n_bytes"],
          "not counted (split before ablate counted it)" if r["contaminated_docs"] is None else r["contaminated_docs"]]
         for r in rows))


def tasks_markdown(pool: Pool, shown: int = 5) -> list[str]:
    """Per task eval set: the seed and the best `shown` merged mixtures and unions by the answer's bits per byte,
    accuracy beside it with its 95 % bootstrap interval over examples where every choice was scored (score-mixture,
    the seed and unions; a sweep's merged rows have bits per byte only: ablate/scoring/tasks.py)."""
    tasks = task_sidecars(pool)
    if not tasks:
        return []
    marks = ", ".join("?" for _ in tasks)
    rows = Index(pool).rows(
        "SELECT m.eval_set, m.method, coalesce(m.budget, '') AS budget, m.mixture, m.bits_per_byte, e.correct "
        "FROM mixture_perplexity m LEFT JOIN task_examples e USING (row_id) WHERE coalesce(m.replicate, 0) = 0 AND "
        f"m.method IN ('seed', 'merged', 'union') AND m.eval_set IN ({marks}) "
        "ORDER BY m.eval_set, m.bits_per_byte, m.row_id", list(tasks))
    lines = ["", "## Tasks: the correct answer's bits per byte, accuracy beside it", "",
             "Bits per byte of the correct continuation given the context (lower is better; what every ranking "
             "reads); accuracy: the choice with the lowest NLL per byte, 95 % bootstrap interval over examples. "
             "A near-chance accuracy with a moving bits per byte is the usual picture at small scale.", ""]
    truths = truth_order(pool)
    lines += [f"- {line}" for line in (task_verdicts(pool, truths[0], ["merged"]) if truths else [])]
    lines += [""] if truths else []
    for name in sorted({r["eval_set"] for r in rows}):
        part = [r for r in rows if r["eval_set"] == name]
        keep = [r for m, n in (("seed", 1), ("merged", shown), ("union", shown)) for r in
                [r for r in part if r["method"] == m][:n]]
        lines += [f"**{name}** ({tasks[name]['n_examples']} examples, {tasks[name]['task']})", ""] + markdown_table(
            ["method", "truth", "mixture", "bits/byte (answer)", "accuracy [95 %]"],
            ([r["method"], r["budget"] or "-", "+".join(r["mixture"]) or "-", num(r["bits_per_byte"], 4),
              describe_accuracy(*accuracy_interval(r["correct"], DEFAULT_RESAMPLES, 0)) if r["correct"] else "-"]
             for r in sorted(keep, key=lambda r: r["bits_per_byte"]))) + [""]
    return lines


def task_verdicts(pool: Pool, budget: str, methods: list[str]) -> list[str]:
    """One line per task eval set and proxy: how the proxy ranks the trained unions by the answer's bits per byte
    (the verdict's numbers, tasks only), with the best union's and the seed's accuracy."""
    from ablate.fidelity.calibrate import fidelity as proxy_fidelity

    tasks = {name: ev["n_examples"] / ev["n_choices"] for name, ev in task_sidecars(pool).items()}
    acc = {r["eval_set"]: r for r in Index(pool).rows(
        "SELECT eval_set, arg_min(accuracy, bits_per_byte) FILTER (WHERE method = 'union') AS union_acc, "
        "any_value(accuracy) FILTER (WHERE method = 'seed') AS seed_acc FROM task_accuracy GROUP BY eval_set")}
    lines = []
    if not tasks:
        return lines
    cases = [c for c in proxies.load_cases(pool) if c.eval_set in tasks]
    methods = [m for m in dict.fromkeys(methods) if proxies.scored(m, cases)]  # ensemble rows: only where scored
    for q in proxy_fidelity(pool, budget, methods, set(tasks)):
        a = acc.get(q["eval_set"], {})
        chance = tasks[q["eval_set"]]  # 1: a cloze task, nothing to choose
        accuracy = (f"; accuracy of the best union {_pct(a.get('union_acc'))}, of the seed {_pct(a.get('seed_acc'))} "
                    f"(chance {_pct(chance)})") if chance < 1 else ""
        lines.append(f"task {q['eval_set']} ({budget} truth, {q['n']} mixtures), `{q['proxy']}` by the answer's bits "
                     f"per byte: Spearman {num(q['spearman'], 2)}, top-1 {yes_no(q['top1'])}"
                     f"{' (within noise)' if q['top1_within_noise'] and not q['top1'] else ''}, regret "
                     f"{num_pct(q['regret'])}{accuracy}")
    return lines


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def growth_markdown(rows: list[dict]) -> list[str]:
    return ["", "## A growing pool: amortized cost per mixture", ""] + markdown_table(
        ["units", "mixtures", "scored", "simulation Wh/mixture", "retraining Wh/mixture"],
        ([g["units"], g["mixtures"], g["scored"], num(g["amortized_wh"]), num(g["retrain_wh_per_mixture"])]
         for g in rows))


def verdict_markdown(pool: Pool, scope: Priced) -> str:
    return "\n".join(fidelity_markdown(pool) + cost_markdown(pool, scope)) + "\n"


def write_report(pool: Pool, out: Path, scope: Priced) -> Path:
    import ablate.fidelity.plots as plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grown = growth(pool, scope)
    text = "# ablate report\n\n" + verdict_markdown(pool, scope)
    truths = truth_order(pool)
    for budget in truths:
        if plots.plot_fidelity(pool, out / f"fidelity-{budget}.png", budget):
            text += f"\n![merged vs union perplexity, ground truth {budget}](fidelity-{budget}.png)\n"
    members = unit_members(pool, scope)
    plots.plot_cost(members, merged_evals(pool, members), out / "cost.png")
    text += "\n![cost of simulation vs retraining](cost.png)\n"
    text += "\n".join(budget_markdown(pool, scope)) + "\n"
    for budget in truths:
        if plots.plot_budget(pool, out / f"budget-{budget}.png", budget, scope.recipe_id):
            text += f"\n![budget curves, ground truth {budget}](budget-{budget}.png)\n"
    text += "\n".join(search_markdown(pool)) + "\n"
    text += "\n".join(optimize_markdown(pool)) + "\n"
    text += "\n".join(tasks_markdown(pool)) + "\n"
    text += "\n".join(eval_sets_markdown(pool)) + "\n"
    if grown:
        text += "\n".join(growth_markdown(grown)) + "\n"
        plots.plot_growth(grown, out / "growth.png")
        text += "\n![amortized cost as the pool grows](growth.png)\n"
    path = out / "report.md"
    atomic_write_bytes(path, text.encode())
    return path
