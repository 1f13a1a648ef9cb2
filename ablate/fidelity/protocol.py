"""Scoring for the fidelity protocol (ablate/workflows/fidelity_runs.py trains; this scores and writes FIDELITY.md).

Per study, ground truth (budget) and calibration budget m ∈ {0, n/2, n, 2n} unions (picked by
the same greedy as `suggest-unions`, nested, among the study's truths): every proxy predicts
every held-out truth (the truths not among the m). Fitted proxies see only the m unions (and
the units alone, which are free); unfitted ones ignore them. All proxies are scored on the same
held-out truths, per eval set: Pearson and Spearman of log ppl, top-1, regret, pairwise
agreement on pairs farther apart than the noise floor (2·√2·sd of replicate unions).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from ablate.core.config import StudyConfig
from ablate.core.formats import fmt, yes_no
from ablate.core.weights import is_uniform
from ablate.fidelity.calibrate import held_out, noise_floor, plan_unions, score_predictions, union_keys
from ablate.fidelity.markdown import markdown_table, own_sections
from ablate.fidelity.task_vectors import geometry as task_vector_geometry
from ablate.scoring import proxies
from ablate.store.pool import Pool, atomic_write_bytes
from ablate.study.budgets import DEFAULT_METHOD, QUESTIONS, seed_known, target_kind
from ablate.study.context import load_study, polish_unions, short_unions

MIN_HELD_OUT = 4  # a ranking of fewer held-out mixtures says little


M_LABELS = ("0", "n/2", "n", "2n")


def calibration_sizes_labels(n_units: int) -> list[int]:
    """The calibration budgets of the protocol, in the order of M_LABELS."""
    return [0, max(1, n_units // 2), n_units, 2 * n_units]


def calibration_sizes(n_units: int, n_truths: int) -> list[int]:
    return [m for m in sorted(set(calibration_sizes_labels(n_units))) if n_truths - m >= MIN_HELD_OUT]


def score_study(cfg: StudyConfig, prep: dict, source: str) -> dict:
    pool = Pool(cfg.pool)
    units, n = prep["units"], len(prep["units"])
    wanted = {tuple(sorted(m)) for m in prep["truths"]}
    all_cases = proxies.load_cases(pool, short_unions(cfg), polish_unions(cfg))
    units_domains = set(cfg.units.domains)
    known = seed_known(cfg, {c.eval_set for c in all_cases}, pool)
    tasks = {name for name, spec in cfg.eval_sets.items() if spec.kind != "text"}  # scored as the answer's BPB
    rows = []
    for budget in cfg.fidelity.budgets:
        # the uniform unions of the study's truth mixtures: weighted unions the weights section trained for the
        # same units are another question (which weights?), not a ranking of mixtures
        truths = {k: v for k, v in proxies.load_truths(pool, budget).items() if k[0] in wanted and is_uniform(k[1])}
        unions = union_keys(truths)
        cases = [c for c in all_cases if c.k == 1 or (c.mixture, c.weights) in set(unions)]
        noise = noise_floor(pool, budget)
        for m in calibration_sizes(n, len(unions)):
            fit_on = [(tuple(mix), proxies.wkey([1 / len(mix)] * len(mix)))
                      for mix in plan_unions(units, [], m, [u[0] for u in unions])]
            label = dict(zip(calibration_sizes_labels(n), M_LABELS))[m]  # pooled across studies of other n
            # what the calibration costs, in trainings of one unit: a sum union of k units costs k
            cost = sum(len(mix) if budget == "sum" else 1 for mix, _ in fit_on)
            for method in cfg.fidelity.proxies:
                if not proxies.scored(method, cases):  # e.g. `private` in a study without replicate members
                    continue
                trains = getattr(proxies.get(method), "trains", None)  # short, polish: a fraction of one unit's tokens
                if trains and budget != "unit":
                    continue
                pred = held_out(method, cases, truths, fit_on, budget)
                # trainings it costs: the m unions it fits on, or its fraction of a union per mixture it ranks
                spent = (cost if proxies.get(method).fitted else
                         proxies.get(method).per_mixture(cfg.fidelity) * (len(unions) - m) if trains else 0)
                for q in score_predictions(pred, truths, noise):
                    rows.append({"study": cfg.name, "budget": budget, "proxy": method, "m": m, "m_label": label,
                                 "target": target_kind(q["eval_set"], units_domains, known),
                                 "task": q["eval_set"] in tasks,
                                 "held_out": len(unions) - m, "fitted": proxies.get(method).fitted,
                                 "calibration_unit_trainings": spent, **q})
    geometry = task_vector_geometry(pool, load_study(cfg, pool))
    return {"study": cfg.name, "source": source, "units": units, "n_truths": len(wanted), "cost": study_cost(pool),
            "geometry": geometry,
            "eval_sets": sorted({c.eval_set for c in all_cases}), "rows": rows,
            "seconds": prep["seconds"], "config": cfg.model_dump(mode="json")}


def study_cost(pool: Pool) -> dict:
    """What the study's pool cost to build, from its price tags (not this run's clock: stages are cached)."""
    from ablate.store.index import Index

    _, train = Index(pool).query("SELECT coalesce(sum(wall_s), 0), coalesce(sum(energy_kwh), 0) FROM models")
    _, ev = Index(pool).query("SELECT coalesce(sum(eval_s + coalesce(merge_s, 0)), 0), coalesce(sum(energy_kwh), 0) "
                              "FROM mixture_perplexity")
    return {"train_s": train[0][0], "train_kwh": train[0][1], "eval_s": ev[0][0], "eval_kwh": ev[0][1]}


# -- the report ---------------------------------------------------------------------------------
def summarize(rows: list[dict]) -> dict:
    """Aggregates over eval sets: top-1 count, median/min Spearman, worst regret, pairwise agreement."""
    sp = [r["spearman"] for r in rows if not math.isnan(r["spearman"])]
    pw = [r["pairwise_agreement"] for r in rows if not math.isnan(r["pairwise_agreement"])]
    ceil = [r["ceiling"] for r in rows if r.get("ceiling") is not None and not math.isnan(r["ceiling"])]
    return {"evals": len(rows), "top1": sum(r["top1"] for r in rows),
            "cost": statistics.mean(r["calibration_unit_trainings"] for r in rows) if rows else 0,
            "top1_noise": sum(r["top1_within_noise"] for r in rows),
            "median_spearman": statistics.median(sp) if sp else math.nan, "min_spearman": min(sp) if sp else math.nan,
            "worst_regret": max(r["regret"] for r in rows) if rows else math.nan,
            "pairwise": statistics.mean(pw) if pw else math.nan,
            "ceiling": statistics.median(ceil) if ceil else math.nan}


def _table(rows: list[dict], keys: list[str]) -> list[str]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return markdown_table(
        [*keys, "fit cost (unit trainings)", "eval sets", "top-1", "top-1 within noise", "median Spearman",
         "min Spearman", "worst regret", "pairwise beyond noise"],
        ([*g, f"{s['cost']:.1f}", s["evals"], f"{s['top1']}/{s['evals']}", f"{s['top1_noise']}/{s['evals']}",
          fmt(s["median_spearman"]), fmt(s["min_spearman"]), fmt(s["worst_regret"], 2, True), fmt(s["pairwise"])]
         for g, s in ((g, summarize(rs)) for g, rs in groups.items())))


def worse_than_merged(rows: list[dict], proxy: str) -> int:
    """Paired count of (study, truth, m, eval set) where `proxy`'s pick is worse by retraining than merged's."""
    merged = {(r["study"], r["budget"], r["m"], r["eval_set"]): r["regret"] for r in rows if r["proxy"] == "merged"}
    return sum(r["regret"] > merged[(r["study"], r["budget"], r["m"], r["eval_set"])] + 1e-12
               for r in rows if r["proxy"] == proxy and (r["study"], r["budget"], r["m"], r["eval_set"]) in merged)


def ranked(rows: list[dict], budget: str, target: str | None = None) -> list[tuple]:
    """(m label, proxy, summary, eval sets worse than merged), per m best first (top-1 within noise, top-1,
    median Spearman); `target`: only eval sets of that kind (covered | eval-only)."""
    part = [r for r in rows if r["budget"] == budget and target in (None, r.get("target"))]
    out = []
    for label in [x for x in M_LABELS if any(r["m_label"] == x for r in part)]:
        at_m = [r for r in part if r["m_label"] == label]
        group = [(summarize([r for r in at_m if r["proxy"] == p]), p, worse_than_merged(at_m, p))
                 for p in sorted({r["proxy"] for r in at_m})]
        group.sort(key=lambda t: (-t[0]["top1_noise"], -t[0]["top1"], -t[0]["median_spearman"]))
        out += [(label, p, s, worse) for s, p, worse in group]
    return out


def headline(rows: list[dict], budget: str, target: str | None = None) -> list[str]:
    return markdown_table(
        ["m", "proxy", "fit cost (unit trainings, mean)", "top-1", "top-1 within noise", "median Spearman",
         "worst regret", "eval sets worse than merged"],
        ([label, proxy, f"{s['cost']:.1f}", f"{s['top1']}/{s['evals']} ({fmt(s['top1'] / s['evals'], 0, True)})",
          f"{s['top1_noise']}/{s['evals']}", fmt(s["median_spearman"]), fmt(s["worst_regret"], 2, True), worse]
         for label, proxy, s, worse in ranked(rows, budget, target)))


def said(s: dict) -> str:
    """A summary in one phrase: top-1, within noise, median and min Spearman, worst regret."""
    return (f"top-1 {s['top1']}/{s['evals']} ({s['top1_noise']}/{s['evals']} within noise), median Spearman "
            f"{fmt(s['median_spearman'])} (min {fmt(s['min_spearman'])}), worst regret {fmt(s['worst_regret'], 2, True)}")


def best_for(rows: list[dict], target: str) -> tuple | None:
    """The best proxy on one kind of target (eval-only | seed-known) at equal compute with at most n calibration
    unions: most picks within noise, then the higher median Spearman; never one that is worse than merged where
    a unit covers."""
    covered = {(label, proxy): worse for label, proxy, _, worse in ranked(rows, "unit", "covered")}
    best = [t for t in ranked(rows, "unit", target) if t[0] in ("0", "n/2", "n") and t[1] not in TRAINED]
    if not best:
        return None
    # ties go to the cheaper answer: fewer unions, then a proxy with nothing to fit (at m = 0 a fitted proxy
    # with no union to fit is its base proxy under another name)
    cost = {"0": 2, "n/2": 1, "n": 0}
    # and, last, to one that needs no replicate member per unit (`private` costs n more trainings)
    return max(best, key=lambda t: (covered.get((t[0], t[1]), 0) == 0, t[2]["top1_noise"], t[2]["median_spearman"],
                                    cost[t[0]], not proxies.get(t[1]).fitted,
                                    not getattr(proxies.get(t[1]), "needs_replicates", False)))


def left_out_choices(rows: list[dict], target: str) -> list[dict]:
    """The default for one kind of target chosen as a user's study would get it: for each study, the proxy (and
    m ≤ n) that `best_for` picks on the *other* studies, then scored on the one left out. A default that only
    looks good on the studies it was chosen on fails here."""
    studies = sorted({r["study"] for r in rows if r.get("target") == target})
    out = []
    for held in studies if len(studies) > 1 else []:
        pick = best_for([r for r in rows if r["study"] != held], target)
        if pick is None:
            continue
        label, proxy = pick[0], pick[1]
        mine = [r for r in rows if r["study"] == held and r["budget"] == "unit" and r["m_label"] == label
                and r["proxy"] == proxy and r.get("target") == target]
        # the merge on the same held-out mixtures (at m = n it is scored on the unions the pick did not fit on)
        merged = [r for r in rows if r["study"] == held and r["budget"] == "unit" and r["m_label"] == label
                  and r["proxy"] == "merged" and r.get("target") == target]
        if mine:
            out.append({"study": held, "target": target, "proxy": proxy, "m": label, **summarize(mine),
                        "merged": summarize(merged)})
    return out


def left_out_table(rows: list[dict]) -> list[str]:
    """Per kind of target no unit covers: the default chosen on the other studies, scored on each study."""
    choices = [c for target in ("seed-known", "eval-only") for c in left_out_choices(rows, target)]
    if not choices:
        return []
    return ["### The default per kind of target, chosen leaving one study out", "",
            "For each study, the proxy `best_for` picks on the other studies (equal compute, m ≤ n), scored on the "
            "study it never saw; `merged` beside it on the same held-out mixtures (the unions the pick was not "
            "fitted on).", ""] + markdown_table(
        ["left-out study", "target", "chosen on the others", "m", "top-1 within noise", "median Spearman",
         "worst regret", "pairs beyond noise", "merged: within noise", "merged: median Spearman",
         "merged: worst regret"],
        ([c["study"], c["target"], c["proxy"], c["m"], f"{c['top1_noise']}/{c['evals']}", fmt(c["median_spearman"]),
          fmt(c["worst_regret"], 2, True), fmt(c["pairwise"]), f"{c['merged']['top1_noise']}/{c['merged']['evals']}",
          fmt(c["merged"]["median_spearman"]), fmt(c["merged"]["worst_regret"], 2, True)] for c in choices)) + [""]


KIND_TEXT = {"seed-known": "**Seed-known targets** (no unit of that domain, but the seed trained on it: forgetting)",
             "eval-only": "**Eval-only targets new to the seed** (no unit of that domain, and the seed never saw it)"}


def ranks_to_goal(s: dict, pairs: bool) -> bool:
    """The ranking goal for targets no unit covers, on one summary: median Spearman >= 0.9, every pick within noise,
    regret <= 1 %, and (`pairs`: seed-known targets) pairs beyond noise agreeing >= 0.95."""
    pairs_ok = not pairs or (not math.isnan(s["pairwise"]) and s["pairwise"] >= 0.95)
    return s["median_spearman"] >= 0.9 and s["top1_noise"] == s["evals"] and s["worst_regret"] <= 0.01 and pairs_ok


def kind_goal(rows: list[dict], target: str) -> list[str]:
    """The merge on one kind of target, then the best proxy there and whether it meets the goal (median Spearman
    ≥ 0.9, every pick within noise, regret ≤ 1 %, pairs beyond noise ≥ 0.95 for seed-known, never worse than
    merged where a unit covers)."""
    merged0 = [r for r in rows if r["budget"] == "unit" and r["m_label"] == "0" and r["proxy"] == "merged"
               and r.get("target") == target]
    lines = []
    if merged0:
        s = summarize(merged0)
        floor = min((r["ceiling"] for r in merged0 if not math.isnan(r.get("ceiling", math.nan))), default=math.nan)
        lines.append(f"- {KIND_TEXT[target]}, equal compute, `merged`, no union: {said(s)}, pairs beyond noise agree "
                     f"{fmt(s['pairwise'])}; the noise ceiling (the Spearman a perfect proxy could reach against one "
                     f"retraining: calibrate.noise_ceiling) is {fmt(s['ceiling'])} median, {fmt(floor)} min.")
    pick = best_for(rows, target)
    if pick:
        label, proxy, s, _ = pick
        covered_worse = {(lb, p): w for lb, p, _, w in ranked(rows, "unit", "covered")}.get((label, proxy), 0)
        ok = ranks_to_goal(s, pairs=target == "seed-known") and covered_worse == 0
        lines.append(f"- {KIND_TEXT[target].split(' (')[0][:-2]}, the best proxy with at most n unions**: `{proxy}` at "
                     f"m = {label}: {said(s)}, pairs beyond noise agree {fmt(s['pairwise'])}; worse than merged on "
                     f"{covered_worse} covered eval sets. Target (median Spearman ≥ 0.9, every pick within noise, "
                     f"regret ≤ 1 %{', pairs ≥ 0.95' if target == 'seed-known' else ''}, never worse than merged where "
                     f"a unit covers): {'met' if ok else 'NOT met'}.")
    return lines


# the proxies that train a fraction of a union per mixture they rank, in the words of their goal line
TRAINED = {"short": ("short unions", "each mixture's own union from the seed on {f} of a union's tokens, a full "
                     "union's steps"),
           "polish": ("polished merges", "each mixture's merge trained further on the mixture, {f} of a union's "
                      "steps in all: the mean over fidelity.polish_orders data orders")}


def trained_goals(rows: list[dict]) -> list[str]:
    """Each proxy that trains (`short`, `polish`) on seed-known targets, against the same goal. Each ranked
    mixture's run costs a fraction of a union, so it answers "which of these few candidates forgets least?", not a
    search over every mixture; best_for leaves them out of "the best proxy with at most n unions"."""
    lines = []
    for proxy, (name, what) in TRAINED.items():
        mine = [r for r in rows if r["budget"] == "unit" and r["m_label"] == "0" and r["proxy"] == proxy
                and r.get("target") == "seed-known"]
        if not mine:
            continue
        s = summarize(mine)
        worse = {(lb, p): w for lb, p, _, w in ranked(rows, "unit", "covered")}.get(("0", proxy), 0)
        ok = ranks_to_goal(s, pairs=True)
        fraction = fmt(mine[0]["calibration_unit_trainings"] / mine[0]["held_out"])
        lines.append(f"- **Seed-known targets, ranked by {name}** (`{proxy}`: {what.format(f=fraction)}; "
                     f"{fmt(s['cost'], 1)} unit trainings a study, mean): {said(s)}, pairs beyond noise agree "
                     f"{fmt(s['pairwise'])}; worse than merged on {worse} covered eval sets. Target (median Spearman "
                     f"≥ 0.9, every pick within noise, regret ≤ 1 %, pairs ≥ 0.95): {'met' if ok else 'NOT met'}.")
    return lines


def goals(rows: list[dict]) -> list[str]:
    """The targets, checked on these rows (so a regenerated report says whether they still hold); seed-known
    targets first (what users protect when they add domain data, where every proxy is weakest), then eval-only
    targets new to the seed: that is where users aim and where the merge is weakest."""
    lines = (["## Goals, checked", ""] + kind_goal(rows, "seed-known") + trained_goals(rows)
             + kind_goal(rows, "eval-only"))
    merged0 = [r for r in rows if r["budget"] == "unit" and r["m_label"] == "0" and r["proxy"] == DEFAULT_METHOD["unit"]]
    tasks = [r for r in merged0 if r.get("task")]
    if tasks:  # eval-only too (no unit trains on a task): counted in the lines above as well
        s = summarize(tasks)
        ok = s["top1_noise"] == s["evals"] and s["median_spearman"] >= 0.9
        lines.append(f"- **Task targets** (multiple choice / cloze, ranked by the correct answer's bits per byte; "
                     f"no unit trains on them), equal compute, `merged`, no union: {said(s)}. Target (every pick "
                     f"within noise, median Spearman ≥ 0.9, as for text): {'met' if ok else 'NOT met'}.")
    covered = [r for r in merged0 if r.get("target") == "covered"]
    if covered:
        lines.append(f"- Targets a unit covers, equal compute, `merged`, no union: {said(summarize(covered))}.")
    if merged0:
        s = summarize(merged0)
        ok = s["top1"] >= 0.8 * s["evals"] and s["median_spearman"] >= 0.9 and s["worst_regret"] <= 0.02
        lines.append(f"- All targets, equal compute (`unit`), default proxy `{DEFAULT_METHOD['unit']}`, no union: "
                     f"{said(s)}. Target (top-1 ≥ 80 %, median Spearman ≥ 0.9, worst regret ≤ 2 %): "
                     f"{'met' if ok else 'NOT met'}.")
    best = [t for t in ranked(rows, "sum") if t[0] in ("0", "n/2", "n")]
    if best:
        label, proxy, s, worse = max(best, key=lambda t: (t[2]["top1"], t[2]["median_spearman"]))
        ok = worse == 0 and s["top1"] >= 0.8 * s["evals"]
        lines.append(f"- Add data (`sum`), the best proxy with at most n calibration unions (by top-1, then median "
                     f"Spearman): `{proxy}` at m = {label}: {said(s)}, worse than merged in {worse} eval sets. "
                     f"Target (never worse than merged, top-1 ≥ 80 %): {'met' if ok else 'NOT met'}.")
    return lines + [""]


def geometry_text(g: dict | None) -> str:
    """The study's task vectors in a sentence (fidelity/task_vectors.py), where measured."""
    if not g or g.get("member_norm") is None:
        return ""
    rep = (f"; a unit's member and its replicate (another data order): cosine {fmt(g['replicate_cosine'])}, so about "
           f"{fmt(1 - g['replicate_cosine'], 0, True)} of a member's squared norm is its run's own"
           if g.get("replicate_cosine") is not None else "")
    unions = (f"; equal-compute unions ({g['unions']}): coefficients on their members {fmt(g['coefficient_over_weight'])}"
              f" x their weights, norm {fmt(g['union_over_merge_norm'])} x the merge's, "
              f"{fmt(g['outside_span'], 0, True)} of the squared norm outside every member's span"
              if g.get("unions") else "")
    return (f" Task vectors (median): members' pairwise cosine {fmt(g['member_cosine'])}{rep}{unions}.")


def write_markdown(results: list[dict], out: Path, seconds: float, sources: list[str]) -> Path:
    rows = [r for s in results for r in s["rows"]]
    order = {"unit": 0, "sum": 1}
    rows.sort(key=lambda r: (order.get(r["budget"], 9), M_LABELS.index(r["m_label"]), r["proxy"], r["study"],
                             r["eval_set"]))
    # what this run was, as the command that reruns it: a user's `ablate fidelity my.yaml --out my.md` is not
    # `make fidelity`, and its raw numbers are my.json
    make = " (`make fidelity`: every `configs/fidelity/*.yaml`)" if Path(out).as_posix().endswith(
        "docs/results/FIDELITY.md") else ""
    lines = ["# Fidelity: how well each proxy ranks mixtures, per ground truth", "",
             f"Ran: `{' '.join(['ablate fidelity', *sources])} --out {out}`{make}; {len(sources)} "
             f"stud{'y' if len(sources) == 1 else 'ies'}, {seconds / 60:.1f} min, reusing whatever its pools already "
             f"held. Raw numbers: `{Path(out).with_suffix('.json').name}`, beside this file.", "",
             "Every figure is out of sample: a fitted proxy is fitted on m unions chosen by `suggest-unions` "
             "(plus the units alone, which are free) and scored only on the other ground-truth mixtures; the "
             "unfitted proxies are scored on the same held-out mixtures. m = 0 means no union was trained.", "",
             "Studies:", ""]
    for s in results:
        lines.append(f"- **{s['study']}** (`{s['source']}`): units {', '.join(s['units'])}; seed on "
                     f"{', '.join(s['config']['seed']['domains'])}; eval sets {', '.join(s['eval_sets'])}; "
                     f"{s['n_truths']} ground-truth mixtures per budget; its pool's price tags: training "
                     f"{s['cost']['train_s'] / 60:.1f} min, evaluation {s['cost']['eval_s'] / 60:.1f} min, "
                     f"{1000 * (s['cost']['train_kwh'] + s['cost']['eval_kwh']):.1f} Wh." + geometry_text(s.get("geometry")))
    lines += ["", "Proxies:", ""] + [f"- `{name}`: {proxies.get(name).summary}" for name in proxies.names()]
    lines += ["", "m: unions trained for fitting, per study: 0, n/2, n, 2n for n units (2n only where at least "
              f"{MIN_HELD_OUT} truths stay held out). Top-1 within noise: the pick's truth is within 2·√2·sd of the "
              "best (sd from replicate unions). Regret: how much worse, by retraining, the proxy's pick is than the "
              "true best, in perplexity.", ""] + goals(rows) + left_out_table(rows)
    for budget in sorted({r["budget"] for r in rows}, key=lambda b: order.get(b, 9)):
        part = [r for r in rows if r["budget"] == budget]
        lines += ["", f"## Ground truth `{budget}`: {QUESTIONS[budget]}", "",
                  "### Seed-known targets (no unit of that domain; the seed trained on it), all studies pooled, by "
                  "m, best first", ""]
        lines += headline(rows, budget, "seed-known")
        lines += ["", "### Eval-only targets new to the seed (no unit, no seed training on that domain), all studies "
                  "pooled, by m, best first", ""]
        lines += headline(rows, budget, "eval-only")
        lines += ["", "### Targets a unit covers, all studies pooled, by m, best first", ""]
        lines += headline(rows, budget, "covered")
        lines += ["", "### All targets, all studies pooled, by calibration budget m (unions trained for fitting), "
                  "best first", ""]
        lines += headline(rows, budget)
        lines += ["", "### All studies pooled, min Spearman and pairwise agreement", ""] + _table(part, ["m_label", "proxy"])
        lines += ["", "### Per study", ""] + _table(part, ["study", "target", "m", "proxy"])
    lines += ["", "## Per eval set (every study, truth, m and proxy)", ""] + markdown_table(
        ["study", "truth", "m", "held out", "proxy", "eval set", "target", "Pearson", "Spearman", "noise ceiling",
         "top-1", "regret", "pairwise"],
        ([r["study"], r["budget"], r["m"], r["held_out"], r["proxy"], r["eval_set"],
          r.get("target", "n/a") + (" (task)" if r.get("task") else ""),
          fmt(r["pearson"]), fmt(r["spearman"]), fmt(r.get("ceiling", math.nan)), yes_no(r["top1"]),
          fmt(r["regret"], 2, True), fmt(r["pairwise_agreement"])] for r in rows))
    out = Path(out)
    kept = own_sections(out.read_text()) if out.exists() else ""  # slow sections other commands own
    atomic_write_bytes(out, ("\n".join(lines) + "\n" + ("\n\n" + kept if kept else "")).encode())
    atomic_write_bytes(out.with_suffix(".json"), json.dumps(results, indent=1, default=str).encode())
    return out
