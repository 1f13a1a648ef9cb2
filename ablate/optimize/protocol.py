"""The optimization protocol every route follows: the fit/held split, the descent, the held comparison, the proxy's
own error and the gate that decides whether the optimized weights are believed.

How to run (from Python; each route, ablate/optimize/routes.py's entries, calls these in order):
    split = split_windows(study, objective.eval_sets, cfg.optimize.fit_fraction, cfg.optimize.split_seed)
    final, raw, history = descend(values_and_slopes, objective, prior, caps, cfg.optimize, reference, tokens)
    held = compare_held({"optimized": ..., "uniform": ...}, split, objective, cfg.optimize.bootstrap, seed)
    error = proxy_error(values_of, objective, calibration, uniform_values, tokens)
    decided = gate(held, error)       # optimization.optimization_row stores the recommendation it implies

Each eval set's full windows are split once, by `optimize.split_seed`, into a fit part (`optimize.fit_fraction`)
and a held part: a route fits on the first and is judged on the second only. The gradient routes (merged,
ensemble) share one descent: the objective's chain rule over the proxy's per-set slopes, `optimize.kl` pulling
toward the prior, one normalized exponentiated-gradient step within the repetition caps (simplex.py) whose
log-weight move decays linearly from `optimize.lr` to 0 (halved for good after a step that climbed, which is taken
back), then the weights below `optimize.floor` dropped; the same descent polishes the candidates
(optimize/candidates.py) from their own starts. The held verdict is a paired bootstrap over the held windows; where
trained unions of the units exist, `proxy_error` pairs the proxy's gain over uniform with the trained one, and
`gate` asks whether the proxy orders mixtures right: the held gain calibrated on those pairs (a + b x gain) must
clear their leave-one-out residual; with fewer than MIN_ERROR_UNIONS unions it must reach PRIOR_GAIN, measured on
the fidelity protocol's cases. `old_gate` (the error's RMS, or the window noise plus a prior) is kept beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ablate.core.errors import UsageError
from ablate.core.progress import bar
from ablate.optimize.objectives import Objective
from ablate.optimize.simplex import kl, mirror_step, project, sparsify
from ablate.scoring.batched import eval_windows
from ablate.scoring.uncertainty import bootstrap_values, point_values
from ablate.study.context import Study

MIN_ERROR_UNIONS = 3  # below this, an RMS over the trained unions is not an error estimate (one union: one draw)
# With fewer trained unions the gate falls back to a prior: FIDELITY.md, "Optimized mixtures, retrained (equal
# compute)" (`ablate fidelity --weights-only`, three studies, 24 objectives) measured the merged proxy's error
# (the RMS over n trained unions of trained minus merged gain over the uniform union) at ±0.72 % to ±15.29 % of
# perplexity, median ±4.26 %. A held gain must then clear the window noise (the bootstrap's lower half-width)
# plus that median, in log ppl. The ensemble route's error was not measured there: it gets the same prior.
PRIOR_PROXY_ERROR_PCT = 4.26
PRIOR_PROXY_ERROR = math.log1p(PRIOR_PROXY_ERROR_PCT / 100)
# The gate's rule with fewer trained unions: FIDELITY-weights.json (the same 13 merged-route cases,
# three studies) orders them by the held gain the proxy predicted: every case at 0.0365 or more (8 of 8: licenses x3,
# manpages, webster, bible, pydocs, computing) realized a gain over uniform once trained, every case at 0.0213 or
# less (5 of 5: quotes, fiction, three means) did not beyond its noise band. PRIOR_GAIN is the middle of that gap
# (log ppl, about +2.9 %); left out one case at a time, the rule still splits the other 12 the same way. 13 cases
# are few: the protocol reruns it (`gate_rule_old` / `recommended_old` keep the old rule's answer beside it).
PRIOR_GAIN = 0.029


@dataclass(frozen=True)
class Route:
    """One way to optimize weights (a registry entry: ablate/optimize/routes.py). `run(cfg, pool, study, plan,
    caps)` returns the merged route's result layout, so storing, gating and validating are the same for all;
    `key(pool, study, plan)` is what else the row's id hashes (the regression route's points), {} for most."""

    name: str
    summary: str  # its words in `--route`'s help
    run: Callable[..., dict]
    key: Callable[..., dict] = lambda pool, study, plan: {}


def split_windows(study: Study, names: list[str], fit_fraction: float, seed: int) -> dict[str, dict]:
    """{eval set: {"fit": [m, T] ids, "held": [h, T] ids, "fit_index", "held_index"}}: a seeded split of its
    full windows (window i holds tokens i*T .. (i+1)*T - 1)."""
    out = {}
    for name in names:
        win = eval_windows(study, name, label=name)
        n = win.full.size(0)
        if n < 2:
            raise UsageError(f"eval set {name} has {n} full window(s) of {study.cfg.eval.seq_len} tokens: "
                             f"optimizing needs 2 or more (one to fit, one to report)")
        order = np.random.default_rng([seed, len(name)] + [ord(c) for c in name]).permutation(n)
        cut = min(n - 1, max(1, round(fit_fraction * n)))
        fit, held = np.sort(order[:cut]), np.sort(order[cut:])
        out[name] = {"fit": win.full[torch.from_numpy(fit)], "held": win.full[torch.from_numpy(held)],
                     # a task's windows count the answer's tokens only (None: every token)
                     "fit_mask": None if win.mask is None else win.mask[torch.from_numpy(fit)],
                     "held_mask": None if win.mask is None else win.mask[torch.from_numpy(held)],
                     "fit_index": fit, "held_index": held}
    return out


def predicted(part: dict, which: str) -> np.ndarray:
    """Tokens each window of a split's part (fit | held) predicts: T - 1, or a task's answer tokens."""
    mask = part[f"{which}_mask"]
    if mask is None:
        return np.full(part[which].size(0), part[which].size(1) - 1, dtype=np.int64)
    return mask.sum(1).numpy().astype(np.int64)


def descend(values_and_slopes, objective: Objective, prior: np.ndarray, caps: np.ndarray | None, opt,
            reference: dict | None, tokens: dict, start: np.ndarray | None = None,
            label: str = "optimize") -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """The gradient routes' mirror descent on the fit windows: (the final weights, floor applied; the raw
    ones; the history of the walk). `values_and_slopes(w)`: the proxy's fit-window log ppl per eval set and its
    dL/dw per set; `opt`: the study's `optimize` settings (steps, lr, kl, floor); `start`: where the walk begins
    (None: the prior; a candidate's start otherwise: weights at 0 stay at 0, so it is polished within its support).

    A step that made the objective climb is taken back and the step size halved from then on (a backtracking
    trust region): the normalized step moves some log-weight by the full `lr` whatever the slope, so near the
    optimum it zig-zagged (the mean of two sets on the tiny study climbed 19 times in 40 steps). The history
    holds every point evaluated (`accepted` false for a step taken back); the walk (the accepted points) never
    climbs. steps + 1 evaluations: the last step's point is evaluated too, and kept only if it did not climb."""
    w = project(prior if start is None else np.asarray(start, dtype=np.float64), caps)
    history, scale = [], 1.0
    kept = None  # (objective, weights, grad) of the last accepted point
    with bar(label, opt.steps + 1, 0, {"objective": "-"}) as update:
        for step in range(opt.steps + 1):
            values, slopes = values_and_slopes(w)
            value, d_l = objective.value_and_slopes(values, reference, tokens)
            total = value + opt.kl * kl(w, prior)
            accepted = kept is None or total <= kept[0]
            history.append({"step": step, "objective": total, "weights": w.tolist(), "accepted": accepted})
            update(1, objective=f"{value:.4f}")
            if accepted:
                grad = sum(d_l[s] * slopes[s] for s in slopes) + opt.kl * (np.log(np.maximum(w, 1e-300) / prior) + 1)
                kept = (total, w, grad)
            else:
                scale /= 2  # the step overshot: smaller ones from here on
            if step == opt.steps:
                break
            w = mirror_step(kept[1], kept[2], scale * opt.lr * (1 - step / opt.steps), caps)  # linear decay: settles
    return sparsify(kept[1], opt.floor, caps), kept[1], history


def climbs(history: list[dict]) -> int:
    """How many times the walk's objective went up from one accepted point to the next (0 with backtracking)."""
    walk = [h["objective"] for h in history if h.get("accepted", True)]
    return sum(1 for a, b in zip(walk, walk[1:]) if b > a)


def compare_held(per: dict, split: dict, objective: Objective, resamples: int, seed: int) -> dict:
    """The held verdict from each weights' per-window NLL sums on the held windows ({"optimized": {set: [h]},
    "uniform": {set: [h]}}), whichever proxy produced them (the merge, the ensemble)."""
    n_pred = {s: predicted(split[s], "held") for s in split}
    tokens = {s: int(n_pred[s].sum()) for s in split}
    nll = {s: np.stack([per["optimized"][s], per["uniform"][s]]) for s in split}  # [2, windows]: paired

    def value(logppl):  # [optimized, uniform] objective values, both relative to the uniform weights
        uni = {s: float(v[1]) for s, v in logppl.items()}
        return [objective.value({s: float(v[0]) for s, v in logppl.items()}, uni, tokens),
                objective.value(uni, uni, tokens)]

    opt_value, uni_value = point_values(nll, n_pred, value)
    gain = uni_value - opt_value
    draws = bootstrap_values(nll, n_pred, value, resamples, seed)
    lo, hi = np.percentile(draws[:, 1] - draws[:, 0], [2.5, 97.5])
    opt_v = {s: float(per["optimized"][s].sum() / n_pred[s].sum()) for s in split}
    uni_v = {s: float(per["uniform"][s].sum() / n_pred[s].sum()) for s in split}
    return {"optimized": float(opt_value), "uniform": float(uni_value), "gain": float(gain),
            "gain_low": float(lo), "gain_high": float(hi), "resolved": bool(lo > 0),
            "per_set": {s: {"optimized": opt_v[s], "uniform": uni_v[s]} for s in split},
            "guards_held": objective.guards_held(opt_v, uni_v)}


def proxy_error(values_of, objective: Objective, calibration: dict, proxy_ref: dict[str, float],
                tokens: dict) -> dict:
    """How far the proxy's gain over uniform is from the trained one's, on this objective's fit windows.

    The held bootstrap only measures window noise; where the proxy is biased (an eval set no unit resembles,
    a mean over many sets whose gains cancel) a resolved held gain can still be a loss once trained. Every
    trained union of these units gives one error: (trained gain over the uniform union) - (proxy gain over
    the uniform proxy); their root mean square is the size a predicted gain must exceed to be believed.
    `values_of(w)`: the proxy's fit-window log ppl per eval set (the merge's or the ensemble's); `proxy_ref`:
    its values at uniform weights, which the caller has already measured."""
    trained_ref = calibration["uniform"]
    errors, pairs = [], []
    for weights, trained in calibration["unions"]:
        proxy = values_of(np.asarray(weights, dtype=float))
        predicted = objective.value(proxy_ref, proxy_ref, tokens) - objective.value(proxy, proxy_ref, tokens)
        realized = objective.value(trained_ref, trained_ref, tokens) - objective.value(trained, trained_ref, tokens)
        errors.append(realized - predicted)
        pairs.append((predicted, realized))
    return {"rms": float(np.sqrt(np.mean(np.square(errors)))), "unions": len(errors),
            "errors": [float(e) for e in errors], "predicted": [float(p) for p, _ in pairs],
            "realized": [float(r) for _, r in pairs]}


def line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of the least-squares line y = a + b x (b = 0 where the x are all equal)."""
    if np.ptp(x) == 0:
        return float(np.mean(y)), 0.0
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def calibrate(error: dict | None) -> dict | None:
    """realized ~ a + b x predicted over the trained unions' gains over the uniform union (proxy_error's pairs), and
    the leave-one-out residual (the RMS of each union's realized gain minus the line fitted without it): how far a
    calibrated gain can be off. None below MIN_ERROR_UNIONS unions (a line through two points has no residual)."""
    if error is None or int(error["unions"]) < MIN_ERROR_UNIONS or "predicted" not in error:
        return None
    x, y = np.asarray(error["predicted"]), np.asarray(error["realized"])
    a, b = line(x, y)
    out = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        ai, bi = line(x[keep], y[keep])
        out.append(y[i] - (ai + bi * x[i]))
    return {"a": a, "b": b, "residual": float(np.sqrt(np.mean(np.square(out)))), "unions": len(x)}


def gate(held: dict, error: dict | None) -> dict:
    """Whether the held gain is believed: does the proxy order mixtures right, not is its scale right.

    With MIN_ERROR_UNIONS or more trained unions: the held gain calibrated on them (a + b x gain, `calibrate`)
    must clear their leave-one-out residual, and the slope must be positive (a proxy whose gains go the wrong way
    on trained unions is not believed however large its gain). With fewer: the held gain must reach
    PRIOR_GAIN, the smallest predicted gain above which every case of the fidelity protocol realized a gain once
    trained. The regression route (a law refitted on the held values, no window interval) needs a positive gain.
    `threshold` is the held gain the rule asked for (in the proxy's own scale), so old and new compare."""
    gain = held["gain"]
    unions = 0 if error is None else int(error["unions"])
    rms = error["rms"] if unions >= MIN_ERROR_UNIONS else None
    if held["gain_low"] is None:
        return {"rule": "held law", "threshold": 0.0, "believed": gain > 0, "unions": None, "rms": None,
                "calibrated": None, "calibration": None}
    cal = calibrate(error)
    if cal is not None:
        calibrated = cal["a"] + cal["b"] * gain
        threshold = (cal["residual"] - cal["a"]) / cal["b"] if cal["b"] > 0 else None  # None: no gain would do
        return {"rule": "calibrated", "threshold": threshold, "believed": cal["b"] > 0 and calibrated > cal["residual"],
                "unions": unions, "rms": rms, "calibrated": calibrated, "calibration": cal}
    return {"rule": "protocol rate", "threshold": PRIOR_GAIN, "believed": gain >= PRIOR_GAIN, "unions": unions,
            "rms": None, "calibrated": None, "calibration": None}


def old_gate(held: dict, error: dict | None) -> dict:
    """The old gate, which asked whether the proxy's scale was right (kept beside the new one in every row, so the
    protocol can compare them): the held gain above the proxy's measured error (RMS over at least MIN_ERROR_UNIONS
    trained unions), else above the window noise plus the protocol's prior; the regression route only needs a
    positive gain."""
    gain = held["gain"]
    unions = 0 if error is None else int(error["unions"])
    if held["gain_low"] is None:
        return {"rule": "held law", "threshold": 0.0, "believed": gain > 0, "unions": None, "rms": None}
    if unions >= MIN_ERROR_UNIONS:
        return {"rule": "proxy error", "threshold": error["rms"], "believed": gain > error["rms"], "unions": unions,
                "rms": error["rms"]}
    window = gain - held["gain_low"]
    threshold = window + PRIOR_PROXY_ERROR
    return {"rule": "window noise + prior", "threshold": threshold, "believed": gain > threshold, "unions": unions,
            "rms": None, "window": window}
