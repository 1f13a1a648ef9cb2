"""FIDELITY.md's "Optimized mixtures, retrained" section, from the cases ablate/workflows/weights_runs.py measured.

How to run: `ablate fidelity --weights-only` writes it (this module only renders; nothing trains here):
    write_section(Path("FIDELITY.md"), studies, seconds)   # replaces the section, or appends it

Raw cases: FIDELITY-weights.json beside FIDELITY.md. Values are objective units (log perplexity, nats per token) measured on the held windows; a gain is
uniform union minus the union in question (> 0 is better); exp(x) - 1 turns one into a relative change.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ablate.core.formats import fmt, rel, rel_band
from ablate.fidelity.markdown import WEIGHTS_HEADING, markdown_table
from ablate.store.pool import atomic_write_bytes

HEADING = WEIGHTS_HEADING
CAPTURE_GOAL, REGRET_GOAL = 0.8, math.log(1.01)


def _captured(c: dict, key: str) -> str:
    """A share of the best known gain; meaningless (n/a) when that gain is inside the noise band."""
    return fmt(c[key], 0, pct=True) if c["best_gain"] > c["noise"] else "n/a (best within noise)"


def _error(c: dict) -> str:
    """The proxy's error on the calibration unions (cases from before the gate have none)."""
    return rel_band(c.get("proxy_error"))


def goals(studies: list[dict]) -> list[str]:
    cases = [c for s in studies for c in s["cases"]]
    n = len(cases)
    never_worse = sum(c["realized_gain"] >= -c["noise"] for c in cases)
    captured = [c for c in cases if c["captured"] is not None and c["best_gain"] > c["noise"]]
    cap_ok = sum(c["captured"] >= CAPTURE_GOAL for c in captured)
    regret_ok = sum(c["regret"] <= REGRET_GOAL for c in cases)
    beat_grid = sum(c["realized_gain"] >= c["grid_gain"] for c in cases)
    reg = [c for c in cases if "regression_gain" in c]
    reg_worse = sum(c["regression_gain"] < -c["noise"] for c in reg)
    rec_ok = sum(c["recommended_gain"] >= -c["noise"] for c in cases)
    rec_cap = sum(c["recommended_gain"] >= CAPTURE_GOAL * c["best_gain"] for c in captured)
    rec_regret = sum(c["best_gain"] - c["recommended_gain"] <= REGRET_GOAL for c in cases)
    follow = [f"K = 0 (the gate) captured >= 80 % {rec_cap}/{len(captured)}, regret <= 1 % {rec_regret}/{n}, never "
              f"worse {rec_ok}/{n}"]
    for k in (1, 3):
        have = [c for c in cases if f"validate{k}_gain" in c]
        if have:
            g = f"validate{k}_gain"
            follow.append(f"K = {k} captured >= 80 % "
                          f"{sum(c[g] >= CAPTURE_GOAL * c['best_gain'] for c in captured if g in c)}/"
                          f"{sum(g in c for c in captured)}, regret <= 1 % "
                          f"{sum(c['best_gain'] - c[g] <= REGRET_GOAL for c in have)}/{len(have)}, never worse "
                          f"{sum(c[g] >= -c['noise'] for c in have)}/{len(have)}, at least as good as the grid pick "
                          f"{sum(c[g] >= c['grid_gain'] - c['noise'] for c in have)}/{len(have)}")
    return [
        "- Following the recommendation (`ablate optimize --validate K`, the route by kind of target: the ensemble "
        "route where no unit covers it, the merged route's top candidate held at #2, the merged route elsewhere; "
        "the best of the top K candidates retrained when it beats uniform beyond twice the noise band, else "
        "uniform; K = 0: the gate's verdict, nothing retrained): " + "; ".join(follow) + ". Goal: captured >= 80 % in 80 % of cases at K = 0, every case at "
        "K = 3, regret <= 1 % at K = 3.",
        f"- Optimized weights (merged route, no union trained) never worse than the uniform union beyond the noise "
        f"band: {never_worse}/{n}. Goal: every case: {'met' if never_worse == n else 'NOT met'}.",
        f"- Following the recommendation (uniform when the held gain is not resolved by the bootstrap, or not larger "
        f"than the proxy's error on the n calibration unions; those n unions are trained, as for the regression "
        f"route): never worse than uniform beyond the noise band {rec_ok}/{n}, captured >= 80 % {rec_cap}/"
        f"{len(captured)}, regret <= 1 % {rec_regret}/{n}.",
        f"- Captured >= 80 % of the best known gain over uniform: {cap_ok}/{len(captured)} cases where some "
        f"trained union beat uniform beyond the noise band. Goal: every case: "
        f"{'met' if cap_ok == len(captured) else 'NOT met'}.",
        f"- Realized regret <= 1 % against the best union trained: {regret_ok}/{n}. "
        f"Goal: every case: {'met' if regret_ok == n else 'NOT met'}.",
        f"- At least as good as the grid search's top pick (weights grid 1,2, same budget, one training each): "
        f"{beat_grid}/{n}.",
        f"- Regression route (n unions + units alone, a law linear in the weights): worse than uniform beyond the "
        f"noise band in {reg_worse}/{len(reg)}; at least as good as the merged route in "
        f"{sum(c['regression_gain'] >= c['realized_gain'] for c in reg)}/{len(reg)}.",
    ]


# route -> (its realized gain key, its captured key, its recommended gain key or None)
ROUTES = {"merged": ("realized_gain", "captured", "merged_recommended_gain"),
          "ensemble": ("ensemble_gain", "ensemble_captured", "ensemble_recommended_gain"),
          "regression": ("regression_gain", "regression_captured", None),
          "grid pick": ("grid_gain", "grid_captured", None),
          "default route, --validate 1": ("validate1_gain", "validate1_captured", "validate1_gain"),
          "default route, --validate 3": ("validate3_gain", "validate3_captured", "validate3_gain")}


def routes_by_target(studies: list[dict]) -> list[str]:
    """Every route's retrained weights per kind of target: seed-known (one eval set no unit trains on and the seed
    knows), eval-only (one no unit trains on, new to the seed), covered
    (one eval set of a unit's domain), mean (over all eval sets); the route the protocol recommends per kind."""
    cases = [c for s in studies for c in s["cases"] if "target" in c]
    if not cases:
        return []
    rows = []
    for target in ("seed-known", "eval-only", "covered", "mean"):
        part = [c for c in cases if c["target"] == target]
        for route, (gain, cap, rec) in ROUTES.items():
            have = [c for c in part if gain in c]
            if not have:
                continue
            beyond = [c for c in have if c["best_gain"] > c["noise"] and c.get(cap) is not None]
            shares = sorted(c[cap] for c in beyond)
            median = shares[len(shares) // 2] if shares else None
            follow = "-" if rec is None else (f"{sum(c[rec] >= -c['noise'] for c in have)}/{len(have)} / "
                                              f"{sum(c[rec] >= CAPTURE_GOAL * c['best_gain'] for c in beyond)}/"
                                              f"{len(beyond)}")
            rows.append([target, route, len(have), f"{sum(c[gain] >= -c['noise'] for c in have)}/{len(have)}",
                         f"{sum(c[cap] >= CAPTURE_GOAL for c in beyond)}/{len(beyond)}", fmt(median, 0, pct=True), follow])
    return markdown_table(["target", "route", "cases", "never worse than uniform beyond noise",
                           "captured >= 80 % (best beyond noise)", "median captured",
                           "following its recommendation: never worse / captured >= 80 %"], rows) + [""]


def mean_gain(study: dict) -> float:
    """The selection score of a setting on a study: the mean realized gain of its optimized weights (log ppl)."""
    return sum(c["realized_gain"] for c in study["cases"]) / len(study["cases"])


def leave_one_study_out(runs: dict[float, list[dict]]) -> list[dict]:
    """Per study, the step size chosen on the other studies (highest mean realized gain; ties: the smaller,
    more conservative one) and that setting's result on the held-out study."""
    lrs = sorted(runs)
    names = [s["study"] for s in runs[lrs[0]]]
    out = []
    for name in names:
        score = {lr: sum(mean_gain(s) for s in runs[lr] if s["study"] != name) for lr in lrs}
        chosen = max(lrs, key=lambda lr: (round(score[lr], 9), -lr))
        out.append({"study": name, "chosen_lr": chosen,
                    "result": next(s for s in runs[chosen] if s["study"] == name)})
    return out


def loso_lines(runs: dict[float, list[dict]]) -> list[str]:
    picks = leave_one_study_out(runs)
    lines = ["### The step size, chosen leaving each study out", "",
             "`optimize.lr` (the largest log-weight move of the first step; lr x steps / 2 bounds how far a weight "
             f"can move) was run at {', '.join(f'{lr:g}' for lr in sorted(runs))} on every study. For each study the "
             "setting with the higher mean realized gain on the *other* studies is chosen, and its result on the "
             "held-out study is what counts:", ""]
    rows = []
    for p in picks:
        cases = p["result"]["cases"]
        cap = [c for c in cases if c["captured"] is not None]
        rows.append([p["study"], f"{p['chosen_lr']:g}", rel(mean_gain(p["result"])),
                     f"{sum(c['realized_gain'] >= -c['noise'] for c in cases)}/{len(cases)}",
                     f"{sum(c['captured'] >= CAPTURE_GOAL for c in cap)}/{len(cap)}",
                     *(rel(mean_gain(next(s for s in runs[lr] if s["study"] == p["study"]))) for lr in sorted(runs))])
    return lines + markdown_table(
        ["held-out study", "lr chosen on the others", "mean realized gain", "never worse than uniform beyond noise",
         "captured >= 80 %", *(f"mean gain at lr {lr:g}" for lr in sorted(runs))], rows) + [""]


def section(studies: list[dict], seconds: float, runs: dict[float, list[dict]] | None = None,
            configs: list[str] | None = None, out: Path | None = None) -> str:
    only = {s.get("targets", "all") for s in studies} == {"eval-only"}
    # none: every configs/fidelity/*.yaml into FIDELITY.md; studies named on the command line wrote a file of their own
    named = "".join(f" {c}" for c in configs or [])
    lines = [HEADING, "",
             f"Regenerate: `ablate fidelity{named} --weights-only{' --weights-targets eval-only' if only else ''}"
             f"{f' --out {out}' if configs and out else ''}` (this run: "
             f"{seconds / 60:.1f} min). "
             + ("This run holds the objectives no unit covers (seed-known and new to the seed) and the means only; "
                "the covered ones, where every route lands on the eval set's own unit, were not rerun. " if only else "")
             + "Per study, for each eval set and for the mean over all of them: the merged route's weights (`ablate optimize`, fit on half "
             "of each eval set's windows), the ensemble route's (`--route ensemble`, same windows and gate), the grid search's top pick for the same objective (`ablate search "
             "--weights-grid 1,2`) and the regression route's weights (`ablate optimize --route regression`, fitted on "
             "n unions picked by `suggest-unions` plus the units alone), all trained as weighted unions at one unit's budget beside the uniform union of "
             "all units and a replicate of the optimized union (the noise band: |optimized - replicate|), and every "
             "union the study trained, all measured on the held windows. Gains are over the uniform union, in "
             "perplexity; captured = realized gain / best known gain (n/a where the best known gain is inside the noise "
             "band); regret against the best union trained. Proxy error: the root mean square, over the same n "
             "unions, of (trained gain - merged gain) over the uniform union on the fit windows; the recommendation "
             "is the uniform mixture where the held predicted gain is not above it.", "",
             "### Goals, checked", "", *goals(studies), "",
             "### Routes by kind of target (seed-known and eval-only: no unit of that domain; mean: every set)", "", *routes_by_target(studies)]
    if runs and len(runs) > 1:
        lines += loso_lines(runs)
    for s in studies:
        lr = f", optimize.lr {s['lr']:g}" if "lr" in s else ""
        lines += [f"### {s['study']} (units {', '.join(s['units'])}{lr})", ""] + markdown_table(
            ["objective", "target", "recommended", "predicted (held, merged)", "proxy error", "optimized, retrained",
             "noise band", "ensemble route, retrained (recommended)", "grid pick, retrained",
             "regression route, retrained", "best known", "captured", "ensemble captured", "grid captured",
             "regression captured", "regret", "grid regret", "unions"],
            ([c["objective"], c.get("target", "n/a"), c["recommended"], rel(c["held_predicted_gain"]), _error(c),
              rel(c["realized_gain"]), rel_band(c["noise"]),
              f"{rel(c['ensemble_gain'])} ({c['ensemble_recommended']})" if "ensemble_gain" in c else "n/a",
              rel(c["grid_gain"]), rel(c["regression_gain"]), rel(c["best_gain"]), _captured(c, "captured"),
              _captured(c, "ensemble_captured") if "ensemble_captured" in c else "n/a",
              _captured(c, "grid_captured"), _captured(c, "regression_captured"), rel(c["regret"]),
              rel(c["grid_regret"]), c["unions_compared"]] for c in s["cases"]))
        lines.append("")
    return "\n".join(lines)


def write_section(path: Path, studies: list[dict], seconds: float, runs: dict[float, list[dict]] | None = None,
                  configs: list[str] | None = None) -> None:
    """Replace the section in an existing FIDELITY.md (or append it); the raw cases go to FIDELITY-weights.json
    beside it (FIDELITY.json is the ranking protocol's, rewritten by every full run)."""
    text = path.read_text() if path.exists() else ""
    new = section(studies, seconds, runs, configs, path)
    if HEADING in text:
        head, _, rest = text.partition(HEADING)
        nxt = rest.find("\n## ")
        text = head + new + ("\n" + rest[nxt + 1:] if nxt >= 0 else "\n")
    else:
        text = text.rstrip("\n") + "\n\n\n" + new + "\n"
    atomic_write_bytes(path, text.encode())
    raw = {"optimized_mixtures": studies}
    if runs and len(runs) > 1:
        raw["by_lr"] = {str(lr): r for lr, r in runs.items()}
    atomic_write_bytes(weights_json(path), (json.dumps(raw, indent=1, default=str) + "\n").encode())


def weights_json(path: Path) -> Path:
    return path.with_name(path.stem + "-weights.json")
