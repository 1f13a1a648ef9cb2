"""Fitted proxies on a user's pool, the noise floor, and which unions to train next.

How to run:
    ablate calibrate                         # per ground truth: every proxy, fitted ones out of sample
    ablate suggest-unions --budget 4 --truth unit   # the next 4 unions worth training for a fit

The fitted proxies themselves live in ablate/scoring/proxies/ (`calibrated`, `regression`); here
they are fitted on every union the pool has for a ground truth (budget `unit` or `sum`) and
their predictions stored as rows beside the `merged` ones (method = the proxy, budget = the
truth they predict). Those rows are in-sample for the unions they were fitted on; the
`in_sample` column of `mixture_vs_union` says so, and `ablate calibrate` reports each fitted
proxy leave-one-union-out. The protocol (`ablate fidelity`, FIDELITY.md) is the headline.

Noise floor: unions trained with other data orders (`train-mixture --replicates`) give the
run-to-run spread of log union perplexity. Two mixtures closer than 2·√2·sd cannot be told
apart by retraining either, so such rank flips are not counted as proxy errors.
"""

from __future__ import annotations

import hashlib
import itertools
import math

import numpy as np

from ablate.core.errors import UsageError
from ablate.core.weights import is_uniform, wkey
from ablate.scoring import proxies
from ablate.scoring.proxies import MIN_UNIONS, union_keys  # noqa: F401  (calibration's vocabulary)
from ablate.scoring.uncertainty import noise_floor  # its owner (search reads it too); the protocol reads it here
from ablate.store.index import Index
from ablate.store.pool import Pool
from ablate.store.results import Row, make_row, row_id, write_rows
from ablate.study.budgets import BUDGETS

FITTED = ("calibrated", "regression")


def ranking_quality(proxy: np.ndarray, truth: np.ndarray, threshold: float = 0.0) -> dict:
    """Pearson/Spearman, top-1, regret, and pairwise agreement on pairs farther apart than the noise."""
    best = int(np.argmin(proxy))
    pairs = [(i, j) for i, j in itertools.combinations(range(len(truth)), 2)
             if abs(truth[i] - truth[j]) > threshold]
    agree = [np.sign(proxy[i] - proxy[j]) == np.sign(truth[i] - truth[j]) for i, j in pairs]
    regret_log = float(truth[best] - truth.min())
    flat = len(truth) <= 2 or np.ptp(proxy) == 0 or np.ptp(truth) == 0
    from scipy import stats  # here, not at the top: ~0.9 s to import, and every command imports this module

    return {
        "n": len(truth),
        "pearson": math.nan if flat else float(stats.pearsonr(proxy, truth)[0]),
        "spearman": math.nan if flat else float(stats.spearmanr(proxy, truth)[0]),
        "top1": bool(truth[best] == truth.min()),
        "top1_within_noise": bool(regret_log <= threshold),
        "regret": math.exp(regret_log) - 1,
        "pairwise_agreement": float(np.mean(agree)) if agree else math.nan,
        "pairs_beyond_noise": len(pairs),
    }


def held_out(method: str, cases: list, truths: dict, fit_on: list[tuple], budget: str) -> dict:
    """Predictions of one proxy for the cases whose union is *not* in fit_on; it sees only fit_on's truths."""
    known = {key: v for key, v in truths.items() if (key[0], key[1]) in set(fit_on)}
    pred = proxies.get(method).predict(cases, known, budget)
    return {c.key: float(p) for c, p in zip(cases, pred) if (c.mixture, c.weights) not in set(fit_on)}


def score_predictions(pred: dict, truths: dict, noise: dict) -> list[dict]:
    """ranking_quality per eval set over the uniform multi-unit cases that have a truth and a prediction."""
    out = []
    for ev in sorted({key[2] for key in truths}):
        keys = [key for key in truths if key[2] == ev and key in pred and len(key[0]) > 1 and is_uniform(key[1])]
        if len(keys) < 3:
            continue
        thr = noise.get(ev, {}).get("threshold", 0.0)
        truth = np.asarray([truths[k] for k in keys])
        q = ranking_quality(np.asarray([pred[k] for k in keys]), truth, thr)
        sd = noise.get(ev, {}).get("sd_log_ppl")
        out.append({"eval_set": ev, "noise_sd": sd, "ceiling": noise_ceiling(truth, sd), **q})
    return out


def noise_ceiling(truth: np.ndarray, sd: float | None) -> float:
    """The correlation a perfect proxy could reach against one retraining per mixture: each truth is the mixture's
    value plus retraining noise of sd `sd` (replicate unions), so at most sqrt(1 − sd² / var(truths)). Where unions
    differ little and one data draw moves them much (the seed's own domains, which every union forgets) this sits
    well below 1, and no proxy's Spearman can be read against 1 there."""
    if sd is None or len(truth) < 3 or np.var(truth, ddof=1) == 0:
        return math.nan
    return float(math.sqrt(max(0.0, 1.0 - sd ** 2 / np.var(truth, ddof=1))))


def fidelity(pool: Pool, budget: str, methods: list[str] | None = None,
             eval_sets: set[str] | None = None) -> list[dict]:
    """Every proxy against one ground truth on this pool (`eval_sets`: on those only); fitted ones
    leave-one-union-out."""
    cases, truths = proxies.load_cases(pool), proxies.load_truths(pool, budget)
    if eval_sets is not None:
        cases = [c for c in cases if c.eval_set in eval_sets]
        truths = {k: v for k, v in truths.items() if k[2] in eval_sets}
    unions = union_keys(truths)
    if len(unions) < MIN_UNIONS:
        return []
    cases = [c for c in cases if c.k == 1 or (c.mixture, c.weights) in set(unions)]
    methods = methods or [m for m in proxies.names() if proxies.scored(m, cases)]
    noise = noise_floor(pool, budget)
    out = []
    for method in methods:
        try:
            pred = _leave_one_union_out(method, cases, truths, unions, budget)
        except UsageError:  # an optional dependency (scikit-learn for `regression`) is not installed
            continue
        out += [{"budget": budget, "proxy": method, **q} for q in score_predictions(pred, truths, noise)]
    return out


def _leave_one_union_out(method: str, cases: list, truths: dict, unions: list[tuple], budget: str) -> dict:
    """Out-of-sample predictions on this pool: a fitted proxy predicts each union from all the others."""
    if not proxies.get(method).fitted:
        return held_out(method, cases, truths, [], budget)
    pred = {}
    for u in unions:
        part = held_out(method, cases, truths, [x for x in unions if x != u], budget)
        pred |= {key: v for key, v in part.items() if (key[0], key[1]) == u}
    return pred


def refresh(pool: Pool, seq_len: int, log=print) -> dict | None:
    """Fit each fitted proxy on every union of each ground truth; store its rows (only those that changed)."""
    merged = {(tuple(r["mixture"]), wkey(r["weights"]), r["eval_set"]): r for r in Index(pool).rows(
        "SELECT * FROM mixture_perplexity WHERE method = 'merged'")}
    if not merged:
        return None
    cases = proxies.load_cases(pool)
    current = dict(Index(pool).query("SELECT row_id, model_id FROM mixture_perplexity WHERE method IN "
                                     "('calibrated', 'regression')")[1])
    fitted, rows = {}, []
    for budget in BUDGETS:
        truths = proxies.load_truths(pool, budget)
        if len(union_keys(truths)) < MIN_UNIONS:
            continue
        for method in FITTED:
            try:
                pred = proxies.get(method).predict(cases, truths, budget)
            except UsageError as exc:  # an optional dependency missing: say so, keep the others
                log(f"{method}: skipped ({exc})")
                continue
            fit_id = f"{method}-" + hashlib.sha256(pred.tobytes() + budget.encode()).hexdigest()[:12]
            fitted[(method, budget)] = {"fit_id": fit_id, "unions": len(union_keys(truths))}
            for c, lp in zip(cases, pred):
                rows += _fitted_row(merged[c.key], method, budget, float(lp), fit_id, seq_len, current)
    write_rows(pool, rows)
    return fitted or None


def _fitted_row(m: dict, method: str, budget: str, lp: float, fit_id: str, seq_len: int,
                current: dict) -> list[Row]:
    """A fitted proxy's row beside its merged row `m`: no model run, so no energy; [] if unchanged."""
    ev = {"domain": m["eval_set"], "data_sha256": m["eval_sha256"]}
    rid = row_id(f"{method}:{budget}", m["model_id"], ev, seq_len)
    if current.get(rid) == fit_id:
        return []
    nll = lp * m["n_tokens"]
    stats = {"n_tokens": m["n_tokens"], "n_bytes": m["n_bytes"], "nll_sum": nll, "ppl": math.exp(lp),
             "bits_per_byte": nll / math.log(2) / max(1, m["n_bytes"]), "eval_s": 0.0}
    none = {"energy_kwh": 0.0, "co2_kg": 0.0, "energy_method": f"none: {method} formula over the merged row"}
    return [make_row(rid, method=method, mixture=m["mixture"], weights=m["weights"], ev=ev, stats=stats,
                     model_id=fit_id, seed_id=m["seed_id"], device="none", eval_precision=None, flops=0.0,
                     spec=m["spec"], budget=budget, energy=none)]


def plan_unions(units: list[str], existing: list[tuple], budget: int,
                candidates: list[tuple] | None = None) -> list[list[str]]:
    """Greedy: spread the next unions over sizes k and over units least covered so far.

    Nested: the first m picks of a larger budget are the picks of budget m."""
    existing = [tuple(sorted(m)) for m in existing]
    cover = {u: 0 for u in units}
    for mix in existing:
        for u in mix:
            cover[u] = cover.get(u, 0) + 1
    sizes = {len(m) for m in existing}
    if candidates is None:
        candidates = [c for k in range(2, len(units) + 1) for c in itertools.combinations(sorted(units), k)]
    pool_ = list(dict.fromkeys(tuple(sorted(c)) for c in candidates if tuple(sorted(c)) not in existing))
    chosen: list[tuple] = []
    for _ in range(min(budget, len(pool_))):
        def score(c):  # unseen sizes first, then least-covered units, then smaller (cheaper) unions
            return (len(c) in sizes, sum(cover[u] for u in c) / len(c), len(c), c)
        best = min((c for c in pool_ if c not in chosen), key=score)
        chosen.append(best)
        sizes.add(len(best))
        for u in best:
            cover[u] += 1
    return [list(c) for c in chosen]


def suggest_unions(pool: Pool, units: list[str], budget: int, truth: str = "sum") -> list[list[str]]:
    """The next `budget` unions of one ground truth worth training (uniform ones already there are skipped)."""
    rows = Index(pool).rows("SELECT units, weights FROM models WHERE kind = 'union' AND coalesce(budget, 'sum') = ?",
                            [truth])
    existing = [tuple(r["units"]) for r in rows if r["weights"] is None or is_uniform(r["weights"])]
    return plan_unions(units, existing, budget)
