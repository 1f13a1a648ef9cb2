"""Stages composed: what a command does after scoring or ranking, that the scoring layer must not do itself.

How to run (from Python; the commands, the demo and the protocol call these, never the bare stages):
    from ablate.workflows.steps import run_search, run_sweep, score_mixture
    score_mixture(cfg, pool, ["fiction-00", "bible-00"], "3,1")   # rows written, fitted rows refreshed
    run_sweep(cfg, pool, units)                                   # the same for every mixture
    run_search(cfg, pool, "quotes", validate=2)                   # rank, train the top 2, record

Scoring writes `merged` rows; the fitted proxies' rows (`calibrated`, `regression`) are derived from them
and from the trained unions (fidelity.calibrate.refresh), so they are refreshed here, one floor up. A
search ranks candidates (optimize.search.rank); validating measures the unions the pool already has on the
target, trains the top ones as the ground truth (train.loop.train_member), scores them on the target and only
then records the ranking with each shown candidate's gap to #1 (optimize.ranks), so the recorded rows say where
the proxy's pick landed among the known truths (trained unions and units alone) and how sure the ranking is.
"""

from __future__ import annotations

from ablate.core.config import StudyConfig
from ablate.core.weights import is_uniform, wkey
from ablate.fidelity.calibrate import refresh
from ablate.optimize import ranks, search
from ablate.scoring import score, sweep
from ablate.scoring.uncertainty import seed_warnings
from ablate.store.index import Index
from ablate.store.pool import Pool
from ablate.store.results import existing_rows, write_rows
from ablate.study.budgets import DEFAULT_TRUTH
from ablate.study.context import load_study
from ablate.train.loop import train_member


def refresh_fitted(cfg: StudyConfig, pool: Pool) -> None:
    """The `calibrated` and `regression` rows beside the `merged` ones, when enough unions exist."""
    refresh(pool, cfg.eval.seq_len, log=lambda *a: None)


def score_mixture(cfg: StudyConfig, pool: Pool, items: list[str], weights: str | list[float] | None = None,
                  eval_names: list[str] | None = None, force: bool = False, warn=None) -> list[dict]:
    """`ablate score-mixture`: score one mixture, refresh the fitted rows, return what it prints; `warn(line)`
    hears when the seed is nearly untrained (ablate/scoring/uncertainty.py)."""
    scored = score.score_mixture(cfg, pool, items, weights, eval_names, force)
    refresh_fitted(cfg, pool)
    rows = score.shown_rows(scored)
    for line in seed_warnings(scored.study, {r["eval_set"]: r["ppl"] for r in rows if r["method"] == "seed"}):
        (warn or (lambda *a: None))(line)
    return rows


def run_sweep(cfg: StudyConfig, pool: Pool, unit_ids: list[str] | None = None, **options) -> dict:
    """`ablate sweep`: every mixture scored (scoring.sweep.run_sweep's options), then the fitted rows."""
    out = sweep.run_sweep(cfg, pool, unit_ids, **options)
    refresh_fitted(cfg, pool)
    return out


def run_search(cfg: StudyConfig, pool: Pool, target, *, truth: str = DEFAULT_TRUTH, validate: int = 0,
               validate_weighted: bool = False, top: int = 10, log=print, **options) -> dict:
    """`ablate search`: rank (optimize.search.rank's options); with `validate`, measure the unions the pool already
    has on the target, then train and score the picks; record the ranking with each shown candidate's gap to #1
    (ablate/optimize/ranks.py). `target`: an eval set's name or an optimize.objectives.Objective.
    Returns record's dict plus `notes`: the warnings to print beside the ranking."""
    ranking = search.rank(cfg, pool, target, truth=truth, validate=validate, top=top, log=log, **options)
    objective = ranking["objective"]
    picks = search.validation_picks(ranking["ranked"], validate, validate_weighted) if validate else []
    if validate:  # what is known costs one evaluation each: a validate never trains nothing and says nothing
        measure_truths(cfg, pool, objective.eval_sets, [list(m) for m in pool_unions(pool, truth)], truth)
    validated = [train_truth(cfg, pool, mix, w, truth, log) for mix, w in picks]
    if picks:
        measure_truths(cfg, pool, objective.eval_sets, [list(v[0]) for v in validated], truth)
    keys = search.shown_keys(ranking, validated, top, validate)
    gaps = ranks.ranking_gaps(cfg, pool, objective, ranking["method"], keys, best=ranking["ranked"][0][0])
    noise = ranks.noise_level(pool, objective, truth)
    out = search.record(pool, ranking, validated, top=top, validate=validate, gaps=gaps, noise=noise)
    return out | {"notes": ranks.ranking_notes(cfg, pool, objective, gaps, noise)}


def measure_truths(cfg: StudyConfig, pool: Pool, sets: list[str], mixtures: list[list[str]], truth: str) -> None:
    """The trained unions of `mixtures` for one ground truth (every replicate: the noise floor) and the seed,
    measured on `sets` where they were not."""
    study = load_study(cfg, pool, sets)
    write_rows(pool, score.score_reference_models(study, mixtures, existing_rows(pool, study.precision), budget=truth))


def pool_unions(pool: Pool, truth: str) -> list[tuple[str, ...]]:
    """The unit sets of the pool's trained unions of one ground truth (members trained before budgets: `sum`)."""
    _, rows = Index(pool).query("SELECT DISTINCT units FROM models WHERE kind = 'union' "
                                "AND coalesce(budget, 'sum') = ?", [truth])
    return sorted(tuple(sorted(u)) for (u,) in rows)


def train_truth(cfg: StudyConfig, pool: Pool, mix: list[str], weights: list[float], truth: str, log) -> tuple:
    """A candidate trained as the ground truth (a weighted one as a weighted union); returns its search key."""
    train_member(cfg, pool, mix, budget=truth, weights=None if is_uniform(weights) else weights, log=log)
    return (tuple(mix), wkey(weights))
