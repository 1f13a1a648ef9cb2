"""How sure a ranking of mixtures is: each candidate's gap to #1 with a paired bootstrap interval over eval windows.

How to run (`ablate search` and `ablate sweep --target` print it; from Python):
    from ablate.optimize.ranks import ranking_gaps, ranking_notes
    gaps = ranking_gaps(cfg, pool, objective, "merged", keys, best=keys[0])   # {key: gap, gap_low, gap_high, tied_top}
    notes = ranking_notes(cfg, pool, objective, gaps, noise)                   # warnings worth a line each

A key is (mixture, wkey(weights)), as search ranks them. The gaps are in the objective's units (log perplexity;
ablate/optimize/objectives.py), bootstrapped by ablate/scoring/uncertainty.py over the eval windows every
candidate shares, `eval.bootstrap` resamples seeded by `eval.bootstrap_seed`. Only evaluated proxies (merged,
task-sum) have windows; a fitted proxy's ranking (calibrated, regression, additive) gets no interval. Rows
measured before per-window losses were kept are measured again, once, for the candidates shown.
"""

from __future__ import annotations

import math

import numpy as np

from ablate.core.config import StudyConfig
from ablate.core.weights import wkey
from ablate.data.tasks import scored_tokens
from ablate.data.units import eval_sets, unit_ids
from ablate.optimize.objectives import Objective
from ablate.optimize.search import uniform_key
from ablate.scoring import proxies
from ablate.scoring.evaluated import score_proxy
from ablate.scoring.score import score_reference_models
from ablate.scoring.tasks import predicted_per_window
from ablate.scoring.uncertainty import bootstrap_values, gap_intervals, noise_floor, point_values, seed_warnings
from ablate.store.index import Index
from ablate.store.pool import Pool
from ablate.store.results import existing_rows, window_losses, write_rows
from ablate.study.budgets import seed_known, target_kind
from ablate.study.context import load_study


def ranking_gaps(cfg: StudyConfig, pool: Pool, objective: Objective, method: str, keys: list[tuple],
                 best: tuple | None = None) -> dict[tuple, dict]:
    """{key: gap to `best` (default: the lowest), gap_low, gap_high, tied_top, bootstrap} for the keys whose
    rows have per-window losses on every eval set the objective reads ({} for a fitted proxy)."""
    if not cfg.eval.bootstrap or not proxies.get(method).evaluated or len(keys) < 2:
        return {}
    sets = objective.eval_sets
    ref = uniform_key(unit_ids(pool)) if objective.needs_reference else None
    want = list(dict.fromkeys([*keys, *([ref] if ref else [])]))
    got, weights = _windows(pool, method, sets, want)
    stale = [k for k in want if k in weights and any((k, s) not in got for s in sets)]
    if stale:  # measured before per-window losses were kept: once more, now keeping them
        score_proxy(load_study(cfg, pool, sets), [(list(k[0]), weights[k]) for k in stale], method,
                    label="per-window losses", force=True)
        got, weights = _windows(pool, method, sets, want)
    evs = {ev["domain"]: ev for ev in eval_sets(pool, sets)}
    n_pred = {s: predicted_per_window(evs[s], cfg.eval.seq_len) for s in sets}
    usable = [k for k in want if all(len(got.get((k, s), ())) == len(n_pred[s]) for s in sets)]
    if len(usable) < 2 or (ref is not None and ref not in usable):
        return {}
    nll = {s: np.stack([got[(k, s)] for k in usable]) for s in sets}
    tokens = {s: scored_tokens(evs[s]) for s in sets} if objective.target_weights == "tokens" else None
    at_ref = usable.index(ref) if ref is not None else None

    def value(logppl: dict[str, np.ndarray]) -> list[float]:
        uniform = {s: float(v[at_ref]) for s, v in logppl.items()} if at_ref is not None else None
        return [objective.value({s: float(v[m]) for s, v in logppl.items()}, uniform, tokens)
                for m in range(len(usable))]

    point = point_values(nll, n_pred, value)
    draws = bootstrap_values(nll, n_pred, value, cfg.eval.bootstrap, cfg.eval.bootstrap_seed)
    gaps = gap_intervals(point, draws, best=usable.index(best) if best in usable else None)
    return {k: g | {"bootstrap": cfg.eval.bootstrap} for k, g in zip(usable, gaps) if k in keys}


def _windows(pool: Pool, method: str, sets: list[str], want: list[tuple]):
    """({(key, eval set): per-window NLL}, {key: the row's stored weights}) of the method's rows for `want`."""
    marks = ", ".join("?" for _ in sets)
    _, rows = Index(pool).query(f"SELECT row_id, mixture, weights, eval_set FROM mixture_perplexity "
                                f"WHERE method = ? AND eval_set IN ({marks})", [method, *sets])
    wanted = set(want)
    mine = [(rid, (tuple(m), wkey(w)), list(w), s) for rid, m, w, s in rows if (tuple(m), wkey(w)) in wanted]
    losses = window_losses(pool, [rid for rid, *_ in mine])
    return ({(k, s): losses[rid] for rid, k, _, s in mine if rid in losses}, {k: w for _, k, w, _ in mine})


def noise_level(pool: Pool, objective: Objective, truth: str) -> float | None:
    """The retraining noise floor on the objective's eval sets (the largest |union / replicate - 1| of the
    truth's replicate unions there), or None where the pool has no replicate of that truth on them."""
    noise = noise_floor(pool, truth)
    seen = [noise[s]["rel_diff"] for s in objective.eval_sets if s in noise]
    return max(seen) if seen else None


def ranking_notes(cfg: StudyConfig, pool: Pool, objective: Objective, gaps: dict[tuple, dict],
                  noise: float | None) -> list[str]:
    """Warnings a ranking needs beside it: a nearly untrained seed; every candidate shown within the window noise
    (or the retraining noise) of #1."""
    notes = seed_notes(cfg, pool, objective.eval_sets)
    others = [g for g in gaps.values() if g["gap"] > 0 or g["gap_high"] > 0]
    if len(others) >= 1 and all(g["tied_top"] for g in others):
        notes.append(f"warning: all {len(gaps)} candidates with an interval are indistinguishable from #1 on these "
                     f"eval windows (every 95 % interval of the gap reaches 0): this eval set cannot rank them; "
                     f"a larger eval set, or training the top ones (--validate), can")
    elif noise is not None and others and all(math.expm1(g["gap"]) <= noise for g in others):
        notes.append(f"warning: every candidate shown is within the retraining noise of #1 ({noise:.2%}, replicate "
                     f"unions): training them would not tell them apart either")
    return notes


# What the fidelity protocol measured on seed-known targets (FIDELITY.md, "Goals, checked": three studies, six
# eval sets, equal compute, `merged` with no union, the default there): the share of mixture pairs farther apart
# than the retraining noise that it ordered as retraining did, and how often its top pick was the true best.
SEED_KNOWN_AGREEMENT = "94 %"
SEED_KNOWN_TOP1 = "3 of 6 eval sets (6 of 6 within the retraining noise, regret up to 3.1 %)"
# With n equal-compute unions trained, `unit-shifts` on the unions it was not fitted on: never worse than the merge
# on those six sets, better on three (median Spearman 0.89 against 0.80)
SEED_KNOWN_FITTED = ("with n unions trained (`ablate suggest-unions`), `--method unit-shifts` ranked them at least as "
                     "well as the merge on every protocol set (median Spearman 0.89 vs 0.80)")


def kind_notes(cfg: StudyConfig, pool: Pool, sets: list[str]) -> list[str]:
    """A line per target the seed knows and no unit covers: how far rankings there agreed with retraining in the
    protocol, and what to do about it (train the top few: `--validate 3`)."""
    known = seed_known(cfg, sets, pool)
    covered = set(cfg.units.domains)
    out = []
    for name in sets:
        if target_kind(name, covered, known) == "seed-known":
            out.append(f"note: {name} is a target the seed already knows and no unit covers (forgetting): there the "
                       f"protocol's default (merged) ordered {SEED_KNOWN_AGREEMENT} of mixture pairs beyond the "
                       f"retraining noise as retraining did and put the true best first on {SEED_KNOWN_TOP1} "
                       f"(FIDELITY.md); rank with it, then train the top 3 (`ablate search --validate 3`); "
                       f"{SEED_KNOWN_FITTED}")
    return out


def seed_notes(cfg: StudyConfig, pool: Pool, sets: list[str]) -> list[str]:
    """untrained-seed warnings for the eval sets (the seed measured on them first where it was not), and the
    seed-known targets' note."""
    study = load_study(cfg, pool, sets)
    seed_id = study.seed["model_id"]
    write_rows(pool, score_reference_models(study, [], existing_rows(pool, study.precision)))  # cached: nothing
    marks = ", ".join("?" for _ in sets)
    _, rows = Index(pool).query(f"SELECT eval_set, ppl FROM mixture_perplexity WHERE method = 'seed' AND model_id = ? "
                                f"AND eval_set IN ({marks})", [seed_id, *sets])
    return seed_warnings(study, dict(rows)) + kind_notes(cfg, pool, sets)
