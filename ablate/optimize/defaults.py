"""Which proxy ranks a target by default: the protocol's best for the question and the kind of target.

How to run (from Python; `ablate search` and the demo call it when no --method is given):
    from ablate.optimize.defaults import default_method, target_kinds
    default_method(pool, "unit", ("quotes",))      # "features" (no unit covers quotes, the seed never saw it)
    target_kinds(pool, ("bible",), known=None)    # ["seed-known"] where the seed trained on bible

Every choice here is measured by the fidelity protocol (FIDELITY.md), out of sample: the per-kind choice is the one
made leaving one study out (fidelity/protocol.py, left_out_choices).
"""

from __future__ import annotations

from ablate.data.units import unit_ids
from ablate.scoring import proxies
from ablate.scoring.proxies import union_keys
from ablate.store.index import Index
from ablate.store.pool import Pool
from ablate.study.budgets import DEFAULT_METHOD, target_kind


def target_kinds(pool: Pool, targets, known=None) -> list[str]:
    """Each target's kind (study.budgets.target_kind) among this pool's units; `known`: the eval sets the seed
    knows (study.budgets.seed_known, from the config); None reads them from the pool: the seed's own domains, or
    every target no unit covers when the seed was imported."""
    index = Index(pool)
    domains = {r["domain"] for r in index.rows("SELECT DISTINCT domain FROM units WHERE kind = 'unit'")}
    if known is None:
        imported = any(m.get("source") for m in pool.iter_metas("seed"))
        known = set(targets) if imported else {
            r["domain"] for r in index.rows("SELECT DISTINCT domain FROM units WHERE kind = 'seedmix'")}
    return [target_kind(t, domains, known) for t in targets]


# The proxy per kind of target no unit covers, chosen by the protocol's rule (most picks within the noise floor,
# then median Spearman; FIDELITY.md, "The default per kind of target", leaving one study out): for targets new to
# the seed `features` (with no union: the average of the merge and the ensemble; 6 of 7 picks within noise against
# the ensemble's 5 of 7, median Spearman 0.93, and on a study left out of the choice the ensemble picked outside the
# noise floor where the average did not); for the seed's own domains the merge (the ensemble ranked them below the
# merge in two of three studies: median Spearman 0.68 against 0.83)
KIND_METHOD = {"eval-only": "features", "seed-known": "merged"}
# Once n equal-compute unions are trained (n = units), targets new to the seed take `unit-shifts` (the merge plus a
# per-unit shift fitted on them): chosen on two studies and scored on the third, it was the pick in all three, and
# against the merge on the same held-out unions it tied on picks within noise (7 of 7 each), never had a larger
# regret (0, 0, 2.0 % against 1.2, 0, 2.0 %) and ranked better in two studies (median Spearman 0.98 and 0.96
# against 0.96 and 0.92), worse in the third (0.86 against 0.93). A modest gain, kept because the protocol's rule
# picked it on every left-out study. Seed-known targets keep the merge: the rule picked unit-shifts for one left-out
# study of three, where it ranked exactly as the merge.
FITTED_KIND_METHOD = {"eval-only": "unit-shifts"}


def default_method(pool: Pool, truth: str, targets: tuple[str, ...] = (), known=None) -> str:
    """The protocol's best proxy for the question and the kind of target (FIDELITY.md, chosen leaving one study
    out): for the add-data truth, `calibrated` once n unions of it are trained (n = units), before that the ensemble
    where no unit covers a target; at equal compute, when no unit covers any target, KIND_METHOD's proxy for their
    kind (the average of the merge and the ensemble for targets new to the seed, the merge for the seed's own), or
    FITTED_KIND_METHOD's once n equal-compute unions are trained; the truth's default (`merged`; `own-additive` for
    add-data) where a unit covers one."""
    if truth == "sum" and _n_unions_trained(pool, "sum"):
        return "calibrated"
    kinds = set(target_kinds(pool, targets, known)) if targets else {"covered"}
    if "covered" in kinds:
        return DEFAULT_METHOD[truth]
    if truth == "sum":  # adding data, no unit on the target: the ensemble ranked both kinds best there (m = 0)
        return "ensemble"
    kind = "eval-only" if kinds == {"eval-only"} else "seed-known"
    if kind in FITTED_KIND_METHOD and truth == "unit" and _n_unions_trained(pool, "unit"):
        return FITTED_KIND_METHOD[kind]
    return KIND_METHOD[kind]


def _n_unions_trained(pool: Pool, truth: str) -> bool:
    """Whether the pool holds n trained unions of this ground truth (n = units, at least 3): what a fitted default
    needs before it replaces the unfitted one."""
    return len(union_keys(proxies.load_truths(pool, truth))) >= max(len(unit_ids(pool)), 3)


# The route `ablate optimize` takes per kind of target when --route is not given (FIDELITY.md, "Optimized mixtures,
# retrained"): where no unit covers the target (new to the seed or known to it), following the ensemble route's
# recommendation captured >= 80 % of the best known gain in 6 of 13 cases against the merged route's 4 of 13, never
# fewer on one study (literary-code 1 and 1, reference-works 3 and 1, six-units 2 and 2), and its regret was <= 1 %
# in 10 of 16 against 7 of 16; where a unit covers a target, or a mean reads a covered set, the merged route
KIND_ROUTE = {"eval-only": "ensemble", "seed-known": "ensemble"}
# The route whose top candidate joins a default route's shortlist at #2 (what `--validate 2` and up retrain): the
# routes disagree case by case (webster: merged 98 % captured, ensemble 78 %; pydocs: ensemble 96 %, merged 75 %),
# so a shortlist of both routes' picks hedges what neither proxy sees alone
PARTNER_ROUTE = {"ensemble": "merged"}


def default_route(kinds: list[str]) -> str:
    """The route for an objective whose targets are of these kinds (target_kinds): the ensemble route when no
    unit covers any of them, else the merged route."""
    chosen = {KIND_ROUTE.get(k, "merged") for k in kinds}
    return chosen.pop() if len(chosen) == 1 else "merged"
