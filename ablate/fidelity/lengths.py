"""Does fidelity survive longer training? One study rerun with units of several lengths (optimizer steps).

How to run:
    ablate fidelity configs/fidelity/literary-code.yaml --unit-steps 32,128,512 --out docs/results/FIDELITY.md

Each length is the same study (same domains, eval sets, seed recipe) with `units.unit_tokens` = steps x
batch x seq, in its own pool (`<pool>-<steps>steps`; the study's own length keeps its pool, so its members
and truths are reused). Per length: the merged proxy against the equal-compute truth (all multi-unit
mixtures, replicates for the noise floor), scored by protocol.score_study with m = 0 (the raw merge is not
fitted), and how far the members moved from the seed: ||θ_member − θ_seed|| / ||θ_seed|| over every
parameter (members of units and of the truths' unions, separately). Rendered as a table and a plot.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from safetensors.torch import load_file

from ablate.core.config import StudyConfig
from ablate.core.errors import UsageError
from ablate.core.formats import fmt, yes_no
from ablate.fidelity.markdown import LENGTHS_HEADING, markdown_table

# the proxies a length is scored with: no union needed, so each length's verdict costs no calibration
LENGTH_PROXIES = ("merged", "ensemble")
TARGETS = ("all", "eval-only", "covered")


def unit_steps(cfg: StudyConfig) -> int:
    """A unit's optimizer steps under the study's recipe (one epoch)."""
    return cfg.units.unit_tokens * cfg.train.epochs // (cfg.train.batch_size * cfg.train.seq_len)


def length_variant(cfg: StudyConfig, steps: int) -> StudyConfig:
    """The same study with units of `steps` optimizer steps; the equal-compute truth and the proxies that need
    no union (the merge, the ensemble)."""
    out = cfg.model_copy(deep=True)
    if steps != unit_steps(cfg):
        out.units.unit_tokens = steps * cfg.train.batch_size * cfg.train.seq_len // cfg.train.epochs
        out.pool = f"{cfg.pool}-{steps}steps"
        out.name = f"{cfg.name}-{steps}steps"
    out.fidelity.budgets = ["unit"]
    out.fidelity.proxies = list(LENGTH_PROXIES)
    return out


def parse_steps(text: str) -> list[int]:
    try:
        steps = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise UsageError(f"--unit-steps {text!r}: give optimizer steps per unit, e.g. 32,128,512") from None
    if not steps or steps[0] < 1:
        raise UsageError(f"--unit-steps {text!r}: give positive step counts, e.g. 32,128,512")
    return steps


def relative_distance(seed: dict[str, torch.Tensor], member: dict[str, torch.Tensor]) -> float:
    """||θ_member − θ_seed|| / ||θ_seed|| over every shared floating-point tensor (float64 sums)."""
    num = den = 0.0
    for name, base in seed.items():
        if name in member and base.is_floating_point():
            num += float((member[name].double() - base.double()).pow(2).sum())
            den += float(base.double().pow(2).sum())
    return (num / den) ** 0.5 if den else float("nan")


STUDY_MODELS = ("(m.kind = 'unit' OR (m.kind = 'union' AND m.budget = 'unit' "
                "AND (m.weights IS NULL OR list_min(m.weights) = list_max(m.weights))))")


def training_seconds(pool_path: str) -> float:
    """Wall seconds of the length's own trainings (units, equal-compute truths, replicates): a pool may hold
    more (the protocol's add-data truths, weighted unions) that another length does not, so not its total."""
    from ablate.store.index import Index
    from ablate.store.pool import Pool

    _, rows = Index(Pool(pool_path)).query(f"SELECT coalesce(sum(m.wall_s), 0) FROM models m WHERE {STUDY_MODELS}")
    return float(rows[0][0])


def member_distances(pool_path: str) -> dict:
    """Median relative distance from the seed of the pool's unit members and of its equal-compute unions."""
    from ablate.store.index import Index
    from ablate.store.pool import Pool

    pool = Pool(pool_path)
    # first replicates only; unions: the equal-compute truths (uniform weights), not weighted validations
    _, rows = Index(pool).query(
        "SELECT m.path, m.kind, s.path FROM models m JOIN models s ON s.model_id = m.seed_id "
        f"WHERE coalesce(m.replicate, 0) = 0 AND {STUDY_MODELS}")
    seeds: dict[str, dict] = {}
    found: dict[str, list[float]] = {"unit": [], "union": []}
    for path, kind, seed_path in rows:
        if seed_path not in seeds:  # paths are relative to the pool's root
            seeds[seed_path] = load_file(str(pool.root / seed_path / "model.safetensors"))
        found[kind].append(relative_distance(seeds[seed_path], load_file(str(pool.root / path / "model.safetensors"))))
    return {kind: statistics.median(v) if v else float("nan") for kind, v in found.items()}


def score_length(cfg: StudyConfig, steps: int, prep: dict, source: str) -> dict:
    """One length's verdict: the raw merge (m = 0) against the equal-compute truth, per eval set."""
    from ablate.fidelity.protocol import score_study, summarize

    scored = score_study(cfg, prep, source)
    unfitted = [r for r in scored["rows"] if r["proxy"] in LENGTH_PROXIES and r["m"] == 0 and r["budget"] == "unit"]
    rows = [r for r in unfitted if r["proxy"] == "merged"]
    noise = [r["noise_sd"] for r in rows if r.get("noise_sd") is not None]
    by = {p: {t: summarize([r for r in unfitted if r["proxy"] == p and t in ("all", r.get("target"))])
              for t in TARGETS if any(r["proxy"] == p and t in ("all", r.get("target")) for r in unfitted)}
          for p in LENGTH_PROXIES if any(r["proxy"] == p for r in unfitted)}
    return {"steps": steps, "study": cfg.name, "pool": cfg.pool, "unit_tokens": cfg.units.unit_tokens,
            "n_truths": scored["n_truths"], "rows": rows, "summary": summarize(rows), "by_proxy": by,
            "proxy_rows": unfitted,
            "noise_sd": statistics.median(noise) if noise else None,
            "distance": member_distances(cfg.pool), "train_s": training_seconds(cfg.pool),
            "true_best_rank": true_best_ranks(cfg.pool)}


def true_best_ranks(pool_path: str) -> dict[str, int]:
    """Per eval set, where the merge ranks the mixture retraining found best (1 = the merge's own pick): how
    many of the merge's top candidates one must retrain to be sure of the true best."""
    from ablate.store.index import Index
    from ablate.store.pool import Pool

    _, rows = Index(Pool(pool_path)).query(
        "WITH j AS (SELECT eval_set, merged_ppl, union_ppl FROM mixture_vs_union "
        "           WHERE k >= 2 AND uniform AND budget = 'unit' AND proxy = 'merged'), "
        "r AS (SELECT *, rank() OVER (PARTITION BY eval_set ORDER BY merged_ppl) AS rm, "
        "             rank() OVER (PARTITION BY eval_set ORDER BY union_ppl) AS ru FROM j) "
        "SELECT eval_set, min(rm) FROM r WHERE ru = 1 GROUP BY eval_set")
    return {ev: int(rank) for ev, rank in rows}


def section(results: list[dict], source: str, seconds: float, plot_name: str | None) -> str:
    """FIDELITY.md's unit-length section: one row per length, the trend said in words, the plot."""
    steps = ",".join(str(r["steps"]) for r in results)
    lines = [LENGTHS_HEADING, "",
             f"Regenerate: `ablate fidelity {source} --unit-steps {steps} --out docs/results/FIDELITY.md` "
             f"(`make fidelity-lengths`; this run: {seconds / 60:.1f} min, reusing what the pools held). "
             "Raw numbers: `FIDELITY-lengths.json`.", "",
             f"The study `{source}` rerun with units of {steps.replace(',', ', ')} optimizer steps (same domains, "
             "eval sets, seed and recipe; only `units.unit_tokens` changes, each length in its own pool). "
             "Per length: the raw "
             "uniform merge against the equal-compute truth (every multi-unit mixture trained with one unit's "
             "tokens), per eval set; the noise floor is the median over eval sets of the sd of log perplexity "
             "between replicate unions (another data order); distance = ||θ − θ_seed|| / ||θ_seed||, median "
             "over the units' members and over the truths' unions.", ""]
    lines += markdown_table(
        ["unit steps", "unit tokens", "truths", "top-1", "top-1 within noise", "median Spearman", "min Spearman",
         "worst regret", "true best in the merge's top", "noise floor (sd)", "distance, units", "distance, unions",
         "training (units + truths)"],
        ([r["steps"], f"{r['unit_tokens']:,}", r["n_truths"], f"{s['top1']}/{s['evals']}", f"{s['top1_noise']}/{s['evals']}",
          f"{s['median_spearman']:.2f}", f"{s['min_spearman']:.2f}", fmt(s["worst_regret"], 2, True),
          max(r["true_best_rank"].values(), default=0), fmt(r["noise_sd"], 2, True), fmt(d.get("unit"), 1, True),
          fmt(d.get("union"), 1, True), f"{r['train_s'] / 60:.1f} min"]
         for r, s, d in ((r, r["summary"], r["distance"]) for r in results)))
    lines += ["", trend(results), ""] + by_target(results)
    if plot_name:
        lines += [f"![fidelity vs unit length]({plot_name})", ""]
    lines += ["Per eval set (rank of the true best: where the merge ranks the mixture retraining found best):", ""]
    lines += markdown_table(
        ["unit steps", "eval set", "Spearman", "top-1", "within noise", "regret", "noise sd", "rank of the true best"],
        ([r["steps"], q["eval_set"], f"{q['spearman']:.2f}", yes_no(q["top1"]), yes_no(q["top1_within_noise"]),
          fmt(q["regret"], 2, True), fmt(q["noise_sd"], 2, True), r["true_best_rank"].get(q["eval_set"], "n/a")]
         for r in results for q in r["rows"]))
    return "\n".join(lines) + "\n"


def by_target(results: list[dict]) -> list[str]:
    """The unfitted proxies per length, eval-only targets (no unit of that domain) apart from covered ones."""
    if not any(r.get("by_proxy") for r in results):
        return []
    return ["Per proxy and kind of target (m = 0: no union trained; eval-only = no unit of that domain):", ""] + markdown_table(
        ["unit steps", "proxy", "targets", "top-1", "top-1 within noise", "median Spearman", "min Spearman", "worst regret"],
        ([r["steps"], proxy, target, f"{s['top1']}/{s['evals']}", f"{s['top1_noise']}/{s['evals']}",
          fmt(s["median_spearman"]), fmt(s["min_spearman"]), fmt(s["worst_regret"], 2, True)]
         for r in results for proxy, per in r.get("by_proxy", {}).items() for target, s in per.items())) + [""]


def trend(results: list[dict]) -> str:
    """Whether fidelity falls as units grow, said per measure so a reader can check it against the table:
    rank agreement (median Spearman down by more than 0.05 from the shortest units), and each eval set whose
    top pick stops being within the noise floor (named, with its regret and that length's noise)."""
    if len(results) < 2:
        return "One length only: no trend."
    first, last = results[0], results[-1]
    sp = [r["summary"]["median_spearman"] for r in results]
    falls = [r["steps"] for r in results[1:] if r["summary"]["median_spearman"] < sp[0] - 0.05]
    said = [f"Rank agreement {'falls, first at ' + str(falls[0]) + ' steps' if falls else 'does not fall'}: "
            f"median Spearman {' → '.join(f'{v:.2f}' for v in sp)}, min "
            f"{' → '.join(format(r['summary']['min_spearman'], '.2f') for r in results)}."]
    ok_first = {q["eval_set"] for q in first["rows"] if q["top1_within_noise"]}
    any_lost = False
    for r in results[1:]:
        lost = [q for q in r["rows"] if q["eval_set"] in ok_first and not q["top1_within_noise"]]
        if lost:
            any_lost = True
            said.append(f"At {r['steps']} steps the top pick leaves the noise floor on " + ", ".join(
                f"`{q['eval_set']}` (regret {fmt(q['regret'], 2, True)}, noise sd {fmt(q['noise_sd'], 2, True)})"
                for q in lost) + ".")
    worst = max(max(r["true_best_rank"].values(), default=0) for r in results)
    said.append(f"The mixture retraining found best was within the merge's top {worst} on every eval set at every "
                "length: retraining that many of its top candidates (`search --validate`) finds it.")
    if not any_lost:
        said.append(f"Top-1 within noise holds at every length ({last['summary']['top1_noise']}/"
                    f"{last['summary']['evals']} at {last['steps']} steps).")
    moved = " → ".join(fmt(r["distance"].get("unit"), 1, True) for r in results)
    said.append(f"Members moved {moved} from the seed.")
    return " ".join(said)


def plot(results: list[dict], path: Path) -> Path:
    """Three panels against unit steps (log scale): rank agreement, regret vs noise, distance from the seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["steps"] for r in results]
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.4))
    ax[0].plot(x, [r["summary"]["median_spearman"] for r in results], "o-", label="median Spearman")
    ax[0].plot(x, [r["summary"]["min_spearman"] for r in results], "s--", label="min Spearman")
    ax[0].plot(x, [r["summary"]["top1_noise"] / r["summary"]["evals"] for r in results], "^:",
               label="top-1 within noise (share)")
    ax[0].set_ylim(min(0, *[r["summary"]["min_spearman"] for r in results]) - 0.05, 1.05)
    ax[0].set_title("merged vs equal-compute truth")
    ax[1].plot(x, [100 * r["summary"]["worst_regret"] for r in results], "o-", label="worst regret")
    ax[1].plot(x, [100 * (r["noise_sd"] or 0) for r in results], "s--", label="noise floor (sd)")
    ax[1].set_ylabel("% perplexity")
    ax[1].set_title("regret vs retraining noise")
    ax[2].plot(x, [100 * r["distance"].get("unit", float("nan")) for r in results], "o-", label="units")
    ax[2].plot(x, [100 * r["distance"].get("union", float("nan")) for r in results], "s--", label="unions")
    ax[2].set_ylabel("% of ||θ_seed||")
    ax[2].set_title("distance from the seed")
    for a in ax:
        a.set_xscale("log", base=2)
        a.set_xticks(x, [str(v) for v in x])
        a.minorticks_off()
        a.set_xlabel("unit steps")
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
