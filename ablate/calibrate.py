"""A calibrated proxy and the noise floor: how far to trust a ranking.

How to run:
    ablate calibrate                   # fit, report leave-one-mixture-out quality, store `calibrated` rows
    ablate suggest-unions --budget 4   # which unions to train next for the most informative fit

Why: unions train k× longer while a merge dilutes each unit by 1/k, so raw merged
perplexity knows which domains matter but not how many units to add. From the
unions that exist we fit one small linear model, pooled over eval sets with a
per-eval-set intercept (a dozen unions per eval set is too few for separate fits):

    log ppl_union ≈ a_eval + b·log ppl_merged + c·log k_eff + d·own + e·own·log ppl_own

k_eff = 1/Σw² (= k for uniform weights); `own` = 1 when the mixture contains a unit
of the eval set's own domain, whose merged-alone perplexity is ppl_own. Single
units are free calibration points: the union of one unit *is* its member.
Quality is reported out of sample (leave one mixture out), next to the raw proxy.

Noise floor: unions trained with other data orders (`train-mixture --replicates`)
give the run-to-run spread of log union perplexity. Two mixtures closer than
2·√2·sd cannot be told apart by retraining either, so such rank flips are not
counted as proxy errors.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from datetime import datetime, timezone

import numpy as np
from scipy.stats import pearsonr, spearmanr

from ablate.index import Index
from ablate.pool import Pool, atomic_write_json

MIN_UNIONS = 3
RIDGE = 1e-3


def _rows(pool: Pool, sql: str) -> list[dict]:
    cols, rows = Index(pool).query(sql)
    return [dict(zip(cols, r)) for r in rows]


def observations(pool: Pool) -> list[dict]:
    """Merged rows with their features and, where known, the union's log perplexity."""
    merged = _rows(pool, """
        SELECT m.mixture, m.weights, m.k, m.uniform, m.eval_set, m.eval_sha256, m.n_tokens, m.n_bytes,
               m.model_id, m.seed_id, m.spec, ln(m.ppl) AS lm, ln(u.ppl) AS lu
        FROM mixture_perplexity m
        LEFT JOIN mixture_perplexity u ON u.method = 'union' AND coalesce(u.replicate, 0) = 0
             AND u.mixture = m.mixture AND u.eval_set = m.eval_set AND m.uniform
        WHERE m.method = 'merged'""")
    domain = {r["unit_id"]: r["domain"] for r in _rows(pool, "SELECT unit_id, domain FROM units")}
    single = {(r["mixture"][0], r["eval_set"]): r["lm"] for r in merged if r["k"] == 1}
    for r in merged:
        if r["k"] == 1:
            r["lu"] = r["lm"]  # the union of one unit is that unit's member
        w = np.asarray(r["weights"], dtype=float)
        r["k_eff"] = float(1.0 / np.sum(w ** 2)) if len(w) else 1.0
        own = [u for u in r["mixture"] if domain.get(u) == r["eval_set"] and (u, r["eval_set"]) in single]
        r["own"] = 1.0 if own else 0.0
        r["own_lm"] = float(np.mean([single[(u, r["eval_set"])] for u in own])) if own else 0.0
    return merged


def _design(obs: list[dict], evals: list[str]) -> np.ndarray:
    cols = []
    for r in obs:
        onehot = [1.0 if r["eval_set"] == e else 0.0 for e in evals]
        cols.append(onehot + [r["lm"], math.log(r["k_eff"]), r["own"], r["own"] * r["own_lm"]])
    return np.asarray(cols)


def fit(obs: list[dict], evals: list[str]) -> np.ndarray:
    train = [r for r in obs if r["lu"] is not None]
    x, y = _design(train, evals), np.asarray([r["lu"] for r in train])
    # a light ridge keeps the solve stable when a feature is constant (e.g. no own-domain unit)
    return np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ y)


def predict(coef: np.ndarray, obs: list[dict], evals: list[str]) -> np.ndarray:
    return _design(obs, evals) @ coef


def _key(r: dict) -> tuple:
    return tuple(r["mixture"]), tuple(round(w, 9) for w in r["weights"])


def leave_one_mixture_out(obs: list[dict], evals: list[str]) -> dict[tuple, float]:
    """Out-of-sample prediction for every (multi-unit mixture with a union, eval set)."""
    targets = sorted({_key(r) for r in obs if r["lu"] is not None and r["k"] >= 2})
    preds = {}
    for key in targets:
        coef = fit([r for r in obs if _key(r) != key], evals)
        for r in obs:
            if _key(r) == key:
                preds[(key, r["eval_set"])] = float(predict(coef, [r], evals)[0])
    return preds


def noise_floor(pool: Pool) -> dict[str, dict]:
    """Per eval set: pooled sd of log union ppl across replicates, and the decision threshold."""
    rows = _rows(pool, "SELECT eval_set, mixture, ln(ppl) AS lu FROM mixture_perplexity WHERE method = 'union'")
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["eval_set"], tuple(r["mixture"])), []).append(r["lu"])
    out = {}
    for ev in sorted({e for e, _ in groups}):
        reps = [v for (e, _), v in groups.items() if e == ev and len(v) >= 2]
        dof = sum(len(v) - 1 for v in reps)
        if not dof:
            continue
        sd = math.sqrt(sum(sum((x - np.mean(v)) ** 2 for x in v) for v in reps) / dof)
        out[ev] = {"sd_log_ppl": sd, "threshold": 2 * math.sqrt(2) * sd, "mixtures": len(reps)}
    return out


def ranking_quality(proxy: np.ndarray, truth: np.ndarray, threshold: float = 0.0) -> dict:
    """Pearson/Spearman, top-1, regret, and pairwise agreement on pairs farther apart than the noise."""
    best = int(np.argmin(proxy))
    pairs = [(i, j) for i, j in itertools.combinations(range(len(truth)), 2)
             if abs(truth[i] - truth[j]) > threshold]
    agree = [np.sign(proxy[i] - proxy[j]) == np.sign(truth[i] - truth[j]) for i, j in pairs]
    regret_log = float(truth[best] - truth.min())
    return {
        "n": len(truth),
        "pearson": float(pearsonr(proxy, truth)[0]) if len(truth) > 2 else math.nan,
        "spearman": float(spearmanr(proxy, truth)[0]) if len(truth) > 2 else math.nan,
        "top1": bool(truth[best] == truth.min()),
        "top1_within_noise": bool(regret_log <= threshold),
        "regret": math.exp(regret_log) - 1,
        "pairwise_agreement": float(np.mean(agree)) if agree else math.nan,
        "pairs_beyond_noise": len(pairs),
    }


def fidelity(pool: Pool) -> list[dict]:
    """Raw vs calibrated (leave-one-mixture-out) per eval set, with the noise floor."""
    obs = observations(pool)
    evals = sorted({r["eval_set"] for r in obs})
    if sum(1 for r in obs if r["lu"] is not None and r["k"] >= 2) < MIN_UNIONS + 1:
        return []
    loo = leave_one_mixture_out(obs, evals)
    noise = noise_floor(pool)
    out = []
    for ev in evals:
        rows = [r for r in obs if r["eval_set"] == ev and (_key(r), ev) in loo]
        if len(rows) < 3:
            continue
        truth = np.asarray([r["lu"] for r in rows])
        thr = noise.get(ev, {}).get("threshold", 0.0)
        raw = ranking_quality(np.asarray([r["lm"] for r in rows]), truth, thr)
        cal = ranking_quality(np.asarray([loo[(_key(r), ev)] for r in rows]), truth, thr)
        out.append({"eval_set": ev, "noise_sd": noise.get(ev, {}).get("sd_log_ppl"), "threshold": thr,
                    "raw": raw, "calibrated": cal})
    return out


def refresh(pool: Pool, seq_len: int, log=print) -> dict | None:
    """Fit on every union there is, store the model, and write a `calibrated` row per merged row."""
    from ablate.score import row_id, write_rows

    obs = observations(pool)
    n_unions = len({_key(r) for r in obs if r["lu"] is not None and r["k"] >= 2})
    if n_unions < MIN_UNIONS:
        log(f"calibration needs at least {MIN_UNIONS} trained multi-unit unions (have {n_unions})")
        return None
    evals = sorted({r["eval_set"] for r in obs})
    coef = fit(obs, evals)
    features = [f"intercept[{e}]" for e in evals] + ["log_merged_ppl", "log_k_eff", "own", "own*log_own_ppl"]
    calib_id = "calib-" + hashlib.sha256(coef.tobytes() + repr(evals).encode()).hexdigest()[:12]
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    preds = predict(coef, obs, evals)
    # Only rows this fit changes are written: an unchanged calibration costs nothing to refresh.
    current = {rid: mid for rid, mid in Index(pool).query(
        "SELECT row_id, model_id FROM mixture_perplexity WHERE method = 'calibrated'")[1]}
    rows = []
    for r, lp in zip(obs, preds):
        ev = {"domain": r["eval_set"], "data_sha256": r["eval_sha256"]}
        if current.get(row_id("calibrated", r["model_id"], ev, seq_len)) == calib_id:
            continue
        nll = float(lp) * r["n_tokens"]
        rows.append({
            "row_id": row_id("calibrated", r["model_id"], ev, seq_len), "mixture": r["mixture"],
            "weights": r["weights"], "k": r["k"], "uniform": r["uniform"], "method": "calibrated",
            "eval_set": r["eval_set"], "eval_sha256": r["eval_sha256"], "n_tokens": r["n_tokens"],
            "n_bytes": r["n_bytes"], "nll_sum": nll, "ppl": math.exp(lp),
            "bits_per_byte": nll / math.log(2) / max(1, r["n_bytes"]), "eval_s": 0.0, "merge_s": 0.0,
            "energy_kwh": 0.0, "co2_kg": 0.0, "energy_method": "none: a fitted formula over the merged row",
            "flops": 0.0, "model_id": calib_id, "seed_id": r["seed_id"], "device": "none", "replicate": 0,
            "spec": r["spec"], "created_at": now})
    write_rows(pool, rows)
    model = {"calib_id": calib_id, "features": features, "coef": coef.tolist(), "unions": n_unions,
             "ridge": RIDGE, "created_at": now}
    atomic_write_json(pool.root / "calibration.json", model)
    return model


def suggest_unions(pool: Pool, units: list[str], budget: int) -> list[list[str]]:
    """Greedy: spread the next unions over sizes k and over units least covered so far."""
    existing = {tuple(r["units"]) for r in _rows(pool, "SELECT units FROM models WHERE kind = 'union'")}
    cover = {u: 0 for u in units}
    for mix in existing:
        for u in mix:
            cover[u] = cover.get(u, 0) + 1
    sizes = {len(m) for m in existing}
    candidates = [c for k in range(2, len(units) + 1) for c in itertools.combinations(sorted(units), k)
                  if c not in existing]
    chosen: list[tuple] = []
    for _ in range(min(budget, len(candidates))):
        def score(c):  # unseen sizes first, then least-covered units, then smaller (cheaper) unions
            return (len(c) in sizes, sum(cover[u] for u in c) / len(c), len(c), c)
        best = min((c for c in candidates if c not in chosen), key=score)
        chosen.append(best)
        sizes.add(len(best))
        for u in best:
            cover[u] += 1
    return [list(c) for c in chosen]


def describe(model: dict) -> str:
    return json.dumps({f: round(c, 4) for f, c in zip(model["features"], model["coef"])})
