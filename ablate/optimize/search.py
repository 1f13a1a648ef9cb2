"""Mixture search: rank candidate mixtures by a proxy (`rank`), and record the ranking (`record`).

How to run:
    ablate search --target quotes --max-size 3                       # uniform mixtures
    ablate search --target quotes --weights-grid 1,2 --validate 2    # + weighted; train the top 2
    ablate search --target quotes --truth sum                        # the add-data question
    ablate search --target quotes --max-candidates 500 --beam 8      # many units: beam search
    ablate search --target fiction,quotes --weights-grid 1,2         # the mean over two eval sets

Candidates are every uniform mixture of up to `--max-size` units and, always, the uniform
mixture of all units (the baseline `ablate optimize` compares against), plus weighted
variants of the small ones (each unit's weight drawn from `--weights-grid`,
normalized, duplicates removed). Each candidate is merged and evaluated on the
target only (cached rows are reused). When there would be more than `--max-candidates`
(default 2000; 64 units make 43,744 mixtures of up to 3), a beam search replaces the list:
every single unit, then the `--beam` best mixtures of each size (by the proxy) grown by every
other unit, up to `--max-size`, the uniform mixture of all units, then the weighted variants of the `--beam` best of sizes 2-3;
about n + beam·n·(max_size-1) candidates, and the best single is always among them. `--truth` names the question: `unit` (which
composition at equal compute, the default) or `sum` (add data, k x budget). The proxy
(`--method`) defaults to the protocol's best for the question (FIDELITY.md): `merged` for
`unit`; for `sum`, `own-additive`, or `calibrated` once n unions of that truth exist.
Units alone are candidates too, and known truths: the seed trained on one unit for one unit's tokens is that
unit's member (at either budget), which its merged row measures. `--validate M` first measures every union of
the truth the pool already has on the target, then trains the top M multi-unit candidates as that ground truth —
a weighted candidate as a weighted union drawing each unit's share of the budget (`--validate-weighted` adds the
best weighted one) — and reports where the proxy's choice landed among all truths known for the target; that is
ablate/workflows/steps.py's `run_search`, which composes rank, train, the gaps to #1 (ablate/optimize/ranks.py) and
record. Rankings go to the `searches` table, each row with its objective and its gap to #1.

Several targets (`--target a,b`, repeatable; `--target-weights`, `--objective worst`, `--max-loss B:x`)
rank by one objective over eval sets, defined once in ablate/optimize/objectives.py and shared with
`ablate optimize` and `ablate sweep --target`: candidates are scored on every eval set the objective
reads and ranked by its value.
"""

from __future__ import annotations

import itertools
import math
import uuid
from datetime import datetime, timezone

from ablate.core.config import StudyConfig
from ablate.core.errors import UsageError
from ablate.core.weights import is_uniform, wkey
from ablate.data.tasks import scored_tokens
from ablate.data.units import eval_sets, unit_ids
from ablate.optimize.defaults import default_method
from ablate.optimize.objectives import Objective, parse_objective
from ablate.scoring import proxies
from ablate.scoring.evaluated import score_proxy
from ablate.scoring.proxies import MIN_UNIONS, union_keys
from ablate.scoring.score import score_reference_models
from ablate.scoring.screen import screen_candidates
from ablate.store.index import Index
from ablate.store.pool import Pool
from ablate.store.results import existing_rows, now, row_id, write_rows, write_search_rows
from ablate.study.budgets import BUDGETS, DEFAULT_TRUTH, QUESTIONS, seed_known
from ablate.study.context import load_study


def candidates(units: list[str], max_size: int, grid: list[float], weighted_max_size: int = 3):
    """(units, weights) pairs: uniform subsets, the uniform mixture of all units (`full_mixture`), then weighted
    variants of subsets up to weighted_max_size."""
    combos = {k: list(itertools.combinations(sorted(units), k)) for k in range(1, max_size + 1)}
    variants = {k: weight_variants(k, grid) for k in range(2, min(max_size, weighted_max_size) + 1)}
    return ([(list(c), [1.0 / k] * k) for k, cs in combos.items() for c in cs] + full_mixture(units, max_size)
            + [(list(c), list(w)) for k, ws in variants.items() for c in combos[k] for w in ws])


def full_mixture(units: list[str], max_size: int) -> list[tuple[list[str], list[float]]]:
    """The uniform mixture of all units when `max_size` leaves it out: the baseline `ablate optimize` compares
    against (and worst-case objectives' reference) is always a candidate, whatever `--max-size` says."""
    n = len(units)
    return [(sorted(units), [1.0 / n] * n)] if max_size < n else []


def weight_variants(k: int, grid: list[float]) -> list[tuple[float, ...]]:
    """candidates()' weighted vectors for k units: normalized, no zero, not uniform, first seen first."""
    uniform, out = tuple([round(1.0 / k, 9)] * k), []
    for raw in itertools.product(grid, repeat=k):
        if sum(raw) <= 0:
            continue
        w = tuple(round(x / sum(raw), 9) for x in raw)
        if 0.0 not in w and w != uniform and w not in out:
            out.append(w)
    return out


def exhaustive_count(n: int, max_size: int, grid: list[float], weighted_max_size: int = 3) -> int:
    """len(candidates(...)) without listing them (the all-units mixture counts once when max_size < n)."""
    return sum(math.comb(n, k) for k in range(1, max_size + 1)) + (max_size < n) + sum(
        math.comb(n, k) * len(weight_variants(k, grid)) for k in range(2, min(max_size, weighted_max_size) + 1))


def beam_search(units: list[str], max_size: int, grid: list[float], width: int, score,
                weighted_max_size: int = 3) -> dict[tuple, float]:
    """Forward selection on the proxy: `score([(units, weights)])` → {(mixture, wkey): ppl} for each round."""
    def best(size: int) -> list[tuple]:
        same = [(v, c) for (c, w), v in scores.items() if len(c) == size and is_uniform(w)]
        return [c for _, c in sorted(same)[:width]]

    scores = dict(score([([u], [1.0]) for u in sorted(units)]))
    for size in range(2, max_size + 1):
        grown = sorted({tuple(sorted({*mix, u})) for mix in best(size - 1) for u in units if u not in mix})
        scores.update(score([(list(c), [1.0 / size] * size) for c in grown]))
    full = [c for c in full_mixture(units, max_size) if (tuple(c[0]), wkey(c[1])) not in scores]
    if full:
        scores.update(score(full))
    weighted = [(list(c), list(w)) for k in range(2, min(max_size, weighted_max_size) + 1) for c in best(k)
                for w in weight_variants(k, grid)]
    if weighted:
        scores.update(score(weighted))
    return scores


def _score(cfg: StudyConfig, pool: Pool, target: str, cands, method: str = "merged",
           screen: dict | None = None) -> dict[tuple, float]:
    """An evaluated proxy's perplexity on the target for every candidate (cached rows first, then build+eval).
    With `screen` (an accumulator), candidates race on prefixes (ablate/scoring/screen.py): a dropped one's value is
    its prefix perplexity and its key joins screen["keys"]."""
    study = load_study(cfg, pool, [target])
    if screen is not None:
        ids = _screen(study, cands, method, screen)
    else:
        ids = score_proxy(study, cands, method, label=f"search {target}")
    _, rows = Index(pool).query("SELECT model_id, ppl FROM mixture_perplexity WHERE method = ? "
                                "AND eval_set = ?", [method, target])
    known = {**dict(rows), **(screen or {}).get("prefix_ppl", {})}
    return {key: known[mid] for key, mid in ids.items()}


def _screen(study, cands, method: str, screen: dict) -> dict[tuple, str]:
    """search --screen: race the candidates without a full row on the target; {(mixture, weights): model id}."""
    proxy, ev = proxies.get(method), study.evals[0]
    done = existing_rows(study.pool, study.precision)
    ids, todo = {}, []
    for mix, weights in cands:
        members = [study.unit_member(u) for u in mix]
        mid = ids[(tuple(mix), tuple(weights))] = proxies.model_id(method, members, weights)
        if row_id(method, mid, ev, study.cfg.eval.seq_len) not in done:
            todo.append({"mixture": mix, "weights": weights, "members": members, "model_id": mid})

    def load(stack, slot, cand):
        stack.load_state(slot, proxy.build(study.pool, study.seed["model_id"], cand["members"], cand["weights"],
                                           device=study.device))

    if todo:
        out = screen_candidates(study, todo, load, method=method)
        for r in out["screened_rows"]:
            screen.setdefault("prefix_ppl", {})[r["model_id"]] = r["ppl"]
            screen.setdefault("keys", set()).add((tuple(r["mixture"]), wkey(r["weights"])))
        for k in ("eval_tokens", "eval_tokens_unscreened"):
            screen[k] = screen.get(k, 0) + out[k]
        screen["dropped"] = screen.get("dropped", 0) + len(out["screened_rows"])
        screen["screen_id"] = out["screen_id"]
    return ids


def _predicted(pool: Pool, target: str, method: str, truth: str, keys: set) -> dict[tuple, float]:
    """A proxy computed from scored rows (no model of its own), fitted on every union of the truth there is."""
    known = proxies.load_truths(pool, truth)
    proxy = proxies.get(method)
    if proxy.fitted and len(union_keys(known)) < MIN_UNIONS and not getattr(proxy, "usable_without_unions", False):
        raise UsageError(f"--method {method} needs {MIN_UNIONS} trained unions of the {truth!r} ground truth: "
                         f"see `ablate suggest-unions --truth {truth}`")
    cases = [c for c in proxies.load_cases(pool) if c.eval_set == target and (c.mixture, c.weights) in keys]
    try:
        pred = proxy.predict(cases, known, truth)
    except ValueError as e:  # rows it reads are not in the pool (private: replicate members; short: short unions)
        raise UsageError(f"--method {method}: {e}") from None
    return {(c.mixture, c.weights): float(math.exp(p)) for c, p in zip(cases, pred)}


def _proxy_scores(cfg: StudyConfig, pool: Pool, target: str, cands, method: str, truth: str,
                  screen: dict | None = None) -> dict[tuple, float]:
    """{(mixture, wkey): the method's perplexity on the target}; merged rows are every method's input."""
    if not getattr(proxies.get(method), "searchable", True):
        trains = getattr(proxies.get(method), "trains", "")
        raise UsageError(f"--method {method} ranks by runs only the fidelity protocol trains (fidelity.{trains}): "
                         f"a fidelity-protocol proxy; search with merged, ensemble or features")
    if screen is not None and (not proxies.get(method).evaluated or proxies.get(method).build is None):
        raise UsageError(f"--screen races evaluated proxies' forward passes (merged, task-sum); {method} needs none")
    scores = {(c, wkey(w)): v for (c, w), v in _score(cfg, pool, target, cands, screen=screen).items()}
    if proxies.get(method).evaluated and method != "merged":
        return {(c, wkey(w)): v for (c, w), v in _score(cfg, pool, target, cands, method, screen).items()}
    if method != "merged":
        _measure_seed(cfg, pool, target)  # additive proxies start from the seed's perplexity on the target
        for needed in getattr(proxies.get(method), "needs", ()):  # e.g. features reads the ensemble's rows
            _score(cfg, pool, target, cands, needed)
        return _predicted(pool, target, method, truth, set(scores))
    return scores


def _measure_seed(cfg: StudyConfig, pool: Pool, target: str) -> None:
    """The seed's row on the target, if missing (a target added after the sweep): one evaluation, written."""
    study = load_study(cfg, pool, [target])
    write_rows(pool, score_reference_models(study, [], existing_rows(pool, study.precision)))


def validation_picks(ranked: list, validate: int, validate_weighted: bool) -> list[tuple[list[str], list[float]]]:
    """The candidates `--validate M` trains: the top M multi-unit ones (and, with `validate_weighted`, the best
    weighted one when the top M are all uniform); a unit alone needs no training (its truth is its member,
    measured by the search itself). Training them is the command's step (ablate/workflows/steps.py), after the unions
    the pool already has are measured on the target."""
    picks = [(list(c), list(w)) for (c, w), _ in ranked if len(c) > 1][:validate]
    if validate_weighted and all(is_uniform(w) for _, w in picks):  # also check the best weighted one
        picks += [(list(c), list(w)) for (c, w), _ in ranked if len(c) > 1 and not is_uniform(w)][:1]
    return picks


def objective_scores(cfg: StudyConfig, pool: Pool, objective: Objective, cands, method: str, truth: str,
                     screen: dict | None = None) -> dict[tuple, float]:
    """{(mixture, wkey): the objective's value by the proxy} (log ppl units; lower is better). Worst-case and
    guarded objectives compare every candidate with the uniform mixture of all the pool's units, scored too."""
    cands = list(cands)
    ref_key = None
    if objective.needs_reference:
        units = unit_ids(pool, required=True)
        ref_key = uniform_key(units)
        if ref_key not in {(tuple(c), wkey(w)) for c, w in cands}:
            cands.append((list(units), [1.0 / len(units)] * len(units)))
    per_set = {s: _proxy_scores(cfg, pool, s, cands, method, truth, screen) for s in objective.eval_sets}
    keys = set.intersection(*(set(v) for v in per_set.values()))
    ref = {s: math.log(per_set[s][ref_key]) for s in per_set} if ref_key else None
    tokens = _eval_tokens(pool, objective) if objective.target_weights == "tokens" else None
    return {k: objective.value({s: math.log(per_set[s][k]) for s in per_set}, ref, tokens) for k in keys}


def _eval_tokens(pool: Pool, objective: Objective) -> dict[str, int]:
    return {ev["domain"]: scored_tokens(ev) for ev in eval_sets(pool, objective.eval_sets)}


def as_objective(pool: Pool, target: str | Objective) -> Objective:
    """A bare eval-set name is the one-set objective; checked against the pool's eval sets."""
    if isinstance(target, Objective):
        return target
    return parse_objective([target], [ev["domain"] for ev in eval_sets(pool)])


def plan(pool: Pool, target: str | Objective, *, max_size: int = 3, grid: list[float] | None = None,
         method: str | None = None, truth: str = DEFAULT_TRUTH, validate: int = 0, top: int = 10,
         max_candidates: int = 2000, beam: int = 4, screen: bool = False, known=None) -> dict:
    """What a search would do, checked and nothing scored: `rank` runs it, `ablate search --dry-run` prints it.
    `known`: the eval sets the seed knows (seed.knows), which pick the default proxy (optimize/defaults.py)."""
    if truth not in BUDGETS:
        raise UsageError(f"--truth must be one of {', '.join(BUDGETS)}, not {truth!r}")
    objective = as_objective(pool, target)
    method = method or default_method(pool, truth, objective.eval_sets, known)
    if method not in proxies.names():
        raise UsageError(f"--method must be one of {', '.join(proxies.names())}, not {method!r}")
    if max_size < 1 or validate < 0 or top < 1 or max_candidates < 1 or beam < 1:
        raise UsageError("--max-size, --top, --max-candidates and --beam must be ≥ 1, --validate ≥ 0")
    if screen and len(objective.eval_sets) > 1:
        raise UsageError("--screen races candidates on one eval set: give one --target, or drop --screen")
    units = unit_ids(pool, required=True)
    size, grid = min(max_size, len(units)), grid or [1.0]
    n_all = exhaustive_count(len(units), size, grid)
    strategy = "exhaustive" if n_all <= max_candidates else f"beam {beam}"
    # what "exhaustive" covers, said where the count is shown: every mixture up to the size, and the full one
    scope = (f"every mixture of up to {size} of the {len(units)} units"
             + (f" and the uniform mixture of all {len(units)}" if full_mixture(units, size) else ""))
    return {"objective": objective, "method": method, "truth": truth, "units": units, "size": size, "grid": grid,
            "n_all": n_all, "strategy": strategy, "beam": beam, "max_candidates": max_candidates, "scope": scope}


def rank(cfg: StudyConfig, pool: Pool, target: str | Objective, *, max_size: int = 3,
         grid: list[float] | None = None, method: str | None = None, truth: str = DEFAULT_TRUTH, validate: int = 0,
         top: int = 10, max_candidates: int = 2000, beam: int = 4, screen: bool = False, log=print) -> dict:
    """Every candidate scored by the proxy for the objective, best first (full evaluations before screened-out
    ones). Scores are the objective's value in log perplexity (ablate/optimize/objectives.py)."""
    p = plan(pool, target, max_size=max_size, grid=grid, method=method, truth=truth, validate=validate, top=top,
             max_candidates=max_candidates, beam=beam, screen=screen,
             known=seed_known(cfg, as_objective(pool, target).eval_sets, pool))
    objective, method, units, size, grid = p["objective"], p["method"], p["units"], p["size"], p["grid"]
    screening = {} if screen else None  # what --screen dropped and saved, across the search's rounds

    def score(cands):
        return objective_scores(cfg, pool, objective, cands, method, truth, screening)

    if p["strategy"] == "exhaustive":
        n_cands, strategy = p["n_all"], "exhaustive"
        scores = score(candidates(units, size, grid))
    else:  # never list them all: 2^64 is not a list
        log(f"search: {p['n_all']} candidates over {len(units)} units exceed --max-candidates {max_candidates}: "
            f"beam search of width {beam}")
        scores = beam_search(units, size, grid, beam, score)
        n_cands, strategy = len(scores), f"beam {beam}"
    log(f"search: {method} proxy, {truth!r} ground truth ({QUESTIONS[truth]}), objective {objective.describe()}")
    dropped = (screening or {}).get("keys", set())
    ranked = sorted(scores.items(), key=lambda kv: (kv[0] in dropped, kv[1]))  # full evaluations first
    return {"target": ",".join(objective.targets), "objective": objective, "method": method, "truth": truth,
            "ranked": ranked, "dropped": dropped, "candidates": n_cands, "strategy": strategy,
            "scope": p["scope"], "screening": screening}


def union_values(pool: Pool, objective: Objective, truth: str) -> dict[tuple, float]:
    """{(mixture, wkey): the objective's value} for every first-replicate union of the truth that was
    evaluated on all the objective's eval sets (relative to the all-units uniform union where it needs one),
    and every unit alone: the seed trained on one unit for one unit's tokens is that unit's member, whatever
    the question (train_member trains it so), and its merged row of one member measures exactly that model."""
    marks = ", ".join("?" for _ in objective.eval_sets)
    _, rows = Index(pool).query(
        "SELECT mixture, weights, eval_set, ln(ppl) FROM mixture_perplexity WHERE ((method = 'union' "
        "AND coalesce(replicate, 0) = 0 AND coalesce(budget, 'sum') = ?) OR (method = 'merged' AND k = 1)) "
        f"AND eval_set IN ({marks})", [truth, *objective.eval_sets])
    per = _complete(rows, objective)
    ref = None
    if objective.needs_reference:
        ref = per.get(uniform_key(unit_ids(pool)))
        if ref is None:
            return {}
    tokens = _eval_tokens(pool, objective) if objective.target_weights == "tokens" else None
    return {k: objective.value(v, ref, tokens) for k, v in per.items()}


def _complete(rows, objective: Objective) -> dict[tuple, dict[str, float]]:
    """(mixture, weights, eval set, log ppl) rows -> {(mixture, wkey): {eval set: log ppl}}, only the mixtures
    with a row on every eval set the objective reads."""
    per: dict[tuple, dict[str, float]] = {}
    for m, w, s, lp in rows:
        per.setdefault((tuple(m), wkey(w)), {})[s] = lp
    return {k: v for k, v in per.items() if len(v) == len(objective.eval_sets)}


def uniform_key(units: list[str]) -> tuple:
    """The search key of the uniform mixture of all `units` (the reference of worst-case and guards)."""
    return tuple(sorted(units)), wkey([1.0 / len(units)] * len(units))


def rank_scored(pool: Pool, objective: Objective, units: list[str], method: str = "merged") -> list[tuple]:
    """[((mixture, wkey), value)] best first, from the rows already scored for mixtures of `units` (a sweep's
    output): only mixtures with a row on every eval set the objective reads."""
    marks = ", ".join("?" for _ in objective.eval_sets)
    _, rows = Index(pool).query(
        f"SELECT mixture, weights, eval_set, ln(ppl) FROM mixture_perplexity WHERE method = ? AND eval_set IN ({marks})",
        [method, *objective.eval_sets])
    per = _complete([r for r in rows if set(r[0]) <= set(units)], objective)
    ref = per.get(uniform_key(units)) if objective.needs_reference else None
    if objective.needs_reference and ref is None:
        raise UsageError(f"objective {objective.describe()} compares with the uniform mixture of all units, "
                         f"which has no {method} row yet")
    tokens = _eval_tokens(pool, objective) if objective.target_weights == "tokens" else None
    return sorted(((k, objective.value(v, ref, tokens)) for k, v in per.items()), key=lambda kv: kv[1])


def shown_keys(ranking: dict, validated: list[tuple], top: int = 10, validate: int = 0) -> list[tuple]:
    """The candidates a search shows and stores: the top ones and the validated ones, in rank order."""
    shown = {key for key, _ in ranking["ranked"][:max(top, validate)]} | set(validated)
    return [key for key, _ in ranking["ranked"] if key in shown]


def record(pool: Pool, ranking: dict, validated: list[tuple], top: int = 10, validate: int = 0,
           gaps: dict | None = None, noise: float | None = None) -> dict:
    """The ranking's shown rows (top ones and validated ones), with where each landed among the known truths
    (trained unions and units alone); written to the `searches` table. `proxy_ppl` and `union_ppl` are
    exp(objective): the perplexity for one eval set, the (weighted) geometric mean for a mean, the ratio to the
    uniform mixture for `worst`. `gaps` (ablate/optimize/ranks.py): each row's gap to #1 with its bootstrap
    interval; `noise`: the retraining noise floor (relative), for `within_noise`."""
    objective, truth, ranked, dropped = ranking["objective"], ranking["truth"], ranking["ranked"], ranking["dropped"]
    union_value = union_values(pool, objective, truth)
    union_rank = {key: i + 1 for i, (key, _) in enumerate(sorted(union_value.items(), key=lambda kv: kv[1]))}
    search_id = f"search-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    created = now()
    out_rows, gaps = [], gaps or {}
    shown = set(shown_keys(ranking, validated, top, validate))
    for rank_, (key, score) in enumerate(ranked, 1):
        if key not in shown:
            continue
        union, gap = union_value.get(key), gaps.get(key, {})
        out_rows.append({
            "row_id": f"{search_id}:{rank_}", "search_id": search_id, "target": ranking["target"],
            "method": ranking["method"], "budget": truth, "rank": rank_, "mixture": list(key[0]),
            "weights": list(key[1]), "proxy_ppl": math.exp(score), "union_ppl": None if union is None else math.exp(union),
            "union_rank": union_rank.get(key), "n_unions_known": len(union_value), "validated": key in validated,
            "screened": key in dropped, "objective": objective.describe(), "created_at": created,
            "gap": gap.get("gap"), "gap_low": gap.get("gap_low"), "gap_high": gap.get("gap_high"),
            "tied_top": gap.get("tied_top"), "bootstrap": gap.get("bootstrap"), "noise_floor": noise,
            "within_noise": None if noise is None or "gap" not in gap else bool(math.expm1(gap["gap"]) <= noise)})
    write_search_rows(pool, search_id, out_rows)
    best_true = math.exp(min(union_value.values())) if union_value else math.nan
    out = {"search_id": search_id, "rows": out_rows, "candidates": ranking["candidates"], "best_union_ppl": best_true,
           "truth": truth, "strategy": ranking["strategy"], "scope": ranking.get("scope"),
           "objective": objective.describe()}
    screening = ranking["screening"]
    if screening and "screen_id" in screening:
        out.update(screened={k: screening[k] for k in ("screen_id", "eval_tokens", "eval_tokens_unscreened")},
                   dropped=screening["dropped"])
    return out
