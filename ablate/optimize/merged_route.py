"""The merged route: mixture weights by mirror descent through the merge, judged on windows it never saw.

How to run:
    ablate optimize --target quotes                          # one eval set, all of the pool's units
    ablate optimize --target fiction,bible,quotes --objective worst --units fiction-00,bible-00,pydocs-00

Each eval set's full windows are split once, by `optimize.split_seed`, into a fit part
(`optimize.fit_fraction`) and a held part. Every step loads theta(w) into the seed's architecture,
runs forward and backward over the fit windows of each eval set the objective reads, and turns the
parameter gradient into one slope per unit (scoring.inplace.MemberSpace.project); the objective's chain rule
combines them, `optimize.kl` pulls toward the prior, and one normalized exponentiated-gradient step
moves w within the repetition caps (simplex.py): no log-weight moves more than `optimize.lr` per step,
decaying linearly to 0, so lr x steps / 2 bounds how far any weight can go from the prior (a trust
region whose size does not depend on the gradients' scale). After `optimize.steps` steps the weights below `optimize.floor` are
dropped. The optimized and the uniform weights are then both measured on the held windows, paired window
by window, and a bootstrap over those windows gives the held gain's 95 % interval: when it reaches 0 the
answer is "nothing beats uniform beyond what the proxy can resolve", and the uniform weights are the
recommendation (the optimized ones are still reported). The bootstrap knows window noise, not the proxy's
bias: where trained unions of these units exist (the uniform one and others), `proxy_error` measures how far
the merged gain over uniform is from the trained one on them, and a held gain not above that error is not
believed either (ablate/workflows/optimize_runs.py decides; FIDELITY.md "Optimized mixtures, retrained" shows why).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ablate.core.errors import UsageError
from ablate.core.progress import bar
from ablate.models.model import model_from_config, seed_config
from ablate.optimize.gradient import set_nll, window_nll
from ablate.optimize.objectives import Objective
from ablate.optimize.simplex import kl, mirror_step, project, sparsify
from ablate.scoring.batched import eval_windows
from ablate.scoring.inplace import MemberSpace
from ablate.scoring.uncertainty import bootstrap_values, point_values
from ablate.study.context import Study


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


def optimize_merged(study: Study, units: list[str], objective: Objective, caps: np.ndarray | None,
                    prior: np.ndarray | None = None, calibration: dict | None = None, log=print) -> dict:
    """Mirror descent on the fit windows, then both weights measured on the held ones; returns the result.

    `calibration` ({"uniform": fit values, "unions": [(weights over `units`, fit values)]}: trained unions'
    log ppl per eval set on the fit windows) adds the proxy's own error on this objective (proxy_error)."""
    # long: one loop read top to bottom; its parts (space, split, step, report) are already helpers
    opt, cfg = study.cfg.optimize, study.cfg
    n = len(units)
    prior = np.full(n, 1.0 / n) if prior is None else prior
    members = [study.unit_member(u) for u in units]
    model = model_from_config(seed_config(study.pool, study.seed["model_id"]), study.device)
    t0 = time.perf_counter()
    space = MemberSpace.of_members(study.pool, members, model, full_hash=cfg.verify_hash)
    split = split_windows(study, objective.eval_sets, opt.fit_fraction, opt.split_seed)
    tokens = {s: int(predicted(split[s], "fit").sum()) for s in split}
    uniform = np.full(n, 1.0 / n)
    reference = fit_values(space, model, split, uniform, cfg.eval.batch_size) if objective.needs_reference else None
    w, history = project(prior, caps), []
    with bar("optimize", opt.steps, 0, {"objective": "-"}) as update:
        for step in range(opt.steps):
            values, slopes = _fit_values_and_slopes(space, model, split, w, cfg.eval.batch_size)
            value, d_l = objective.value_and_slopes(values, reference, tokens)
            grad = sum(d_l[s] * slopes[s] for s in slopes) + opt.kl * (np.log(np.maximum(w, 1e-300) / prior) + 1)
            history.append({"step": step, "objective": value + opt.kl * kl(w, prior), "weights": w.tolist()})
            w = mirror_step(w, grad, opt.lr * (1 - step / opt.steps), caps)  # linear decay: settles
            update(1, objective=f"{value:.4f}")
    final = sparsify(w, opt.floor, caps)
    held = held_comparison(space, model, split, final, uniform, objective, cfg.eval.batch_size, opt.bootstrap,
                           opt.split_seed)
    uniform_values = reference or fit_values(space, model, split, uniform, cfg.eval.batch_size)
    fit_final = objective.value(fit_values(space, model, split, final, cfg.eval.batch_size), reference, tokens)
    fit_uniform = objective.value(uniform_values, reference, tokens)
    error = None if calibration is None else proxy_error(
        lambda w: fit_values(space, model, split, w, cfg.eval.batch_size), objective, calibration, uniform_values,
        tokens)
    return {"units": units, "members": members, "weights": final.tolist(), "raw_weights": w.tolist(),
            "proxy_error": error,
            "fit": {"optimized": fit_final, "uniform": fit_uniform}, "held": held, "history": history,
            "steps": opt.steps, "seconds": time.perf_counter() - t0, "in_memory": space.in_memory,
            "fit_windows": {s: int(split[s]["fit"].size(0)) for s in split},
            "held_windows": {s: int(split[s]["held"].size(0)) for s in split}}


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
    errors = []
    for weights, trained in calibration["unions"]:
        proxy = values_of(np.asarray(weights, dtype=float))
        predicted = objective.value(proxy_ref, proxy_ref, tokens) - objective.value(proxy, proxy_ref, tokens)
        realized = objective.value(trained_ref, trained_ref, tokens) - objective.value(trained, trained_ref, tokens)
        errors.append(realized - predicted)
    return {"rms": float(np.sqrt(np.mean(np.square(errors)))), "unions": len(errors),
            "errors": [float(e) for e in errors]}


def fit_values(space: MemberSpace, model, split: dict, w: np.ndarray, batch_size: int) -> dict[str, float]:
    space.load(w)
    return {s: _logppl(*set_nll(model, part["fit"], batch_size, grad=False, mask=part["fit_mask"]))
            for s, part in split.items()}


def _fit_values_and_slopes(space: MemberSpace, model, split: dict, w: np.ndarray, batch_size: int):
    """Per eval set: log ppl on its fit windows and dL/dw (one backward per set)."""
    space.load(w)
    values, slopes = {}, {}
    for s, part in split.items():
        model.zero_grad(set_to_none=True)
        values[s] = _logppl(*set_nll(model, part["fit"], batch_size, grad=True, mask=part["fit_mask"]))
        slopes[s] = space.project()
    model.zero_grad(set_to_none=True)
    return values, slopes


def _logppl(nll: float, n_pred: int) -> float:
    return nll / n_pred


def held_comparison(space: MemberSpace, model, split: dict, w: np.ndarray, uniform: np.ndarray,
                    objective: Objective, batch_size: int, resamples: int, seed: int) -> dict:
    """Both weights on the held windows: objective values, the gain (uniform - optimized, > 0 is better)
    with a paired bootstrap interval over windows, per-set log ppl, and whether the guards held."""
    per = {}
    for label, weights in (("optimized", w), ("uniform", uniform)):
        space.load(weights)
        per[label] = {s: window_nll(model, part["held"], batch_size, part["held_mask"]) for s, part in split.items()}
    return compare_held(per, split, objective, resamples, seed)


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
