"""Private drift (scoring/drift.py) and the proxies that read it (scoring/proxies/private.py), on real members."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from ablate.scoring import proxies
from ablate.scoring.drift import replicate_pairs, score_drift
from ablate.scoring.proxies.base import Case
from ablate.scoring.proxies.private import ENSEMBLE, MERGE, REPLICATE, penalties
from ablate.store.index import Index
from ablate.study.context import load_study
from ablate.train.loop import train_member

quiet = dict(log=lambda *a: None)


@pytest.fixture(scope="module")
def drifted(study, tmp_path_factory):
    """The tiny study with a replicate member for two of its units, and their drift rows."""
    from conftest import copy_study

    cfg, pool = copy_study(study[0], tmp_path_factory.mktemp("drift"))
    units = study[2]
    for u in units[:2]:
        train_member(cfg, pool, [u], replicate=1, **quiet)
    s = load_study(cfg, pool)
    from ablate.workflows.steps import run_sweep

    run_sweep(cfg, pool, units, log=lambda *a: None)  # the merged rows: every unit alone among them
    from ablate.scoring.evaluated import score_proxy

    score_proxy(s, [([u], [1.0]) for u in units] + [(units[:2], [0.5, 0.5])], "ensemble")
    return cfg, pool, units, s, score_drift(s, units)


def test_only_units_with_a_replicate_are_measured(drifted):
    cfg, pool, units, s, measured = drifted
    assert measured == 2 and set(replicate_pairs(s, units)) == set(units[:2])
    member, other = replicate_pairs(s, units)[units[0]]
    assert member != other and pool.read_meta(other)["replicate"] == 1 and pool.read_meta(other)["kind"] == "unit"
    a = penalties(Index(pool))
    assert {u for u, _ in a} == set(units[:2]) and len(a) == 2 * len(s.evals)
    assert all(math.isfinite(x) and math.isfinite(y) for x, y in a.values())


def test_the_replicate_row_is_the_replicate_member_measured(drifted):
    """The `replicate` row (from the per-token cache) equals the replicate member evaluated as any model is."""
    from ablate.models.model import load_member
    from ablate.scoring.score import evaluate_rows

    cfg, pool, units, s, _ = drifted
    _, other = replicate_pairs(s, units)[units[0]]
    direct = evaluate_rows(s, load_member(pool, other, full_hash=False), method="x", mixture=[units[0]],
                           weights=[1.0], model_id=other)
    stored = {r["eval_set"]: r["ppl"] for r in Index(pool).rows(
        "SELECT eval_set, ppl FROM mixture_perplexity WHERE method = ? AND model_id = ?", [REPLICATE, other])}
    assert {r["eval_set"]: pytest.approx(r["ppl"], rel=1e-5) for r in direct} == stored


def test_drift_rows_are_cached_not_recomputed(drifted):
    cfg, pool, units, s, _ = drifted
    count = "SELECT count(*) AS n FROM mixture_perplexity WHERE method IN (?, ?, ?)"
    before = Index(pool).rows(count, [REPLICATE, MERGE, ENSEMBLE])[0]["n"]
    assert score_drift(load_study(cfg, pool), units) == 2
    assert Index(pool).rows(count, [REPLICATE, MERGE, ENSEMBLE])[0]["n"] == before == 3 * 2 * len(s.evals)


def test_a_member_alone_is_itself_and_a_mixture_pays_the_drift(drifted):
    cfg, pool, units, s, _ = drifted
    cases = proxies.load_cases(pool)
    for name in ("private", "private-ensemble"):
        assert not proxies.scored(name, cases)  # two units have no replicate: never a silent zero
        ok = [c for c in cases if (c.k == 1 or c.drift is not None) and c.ensemble is not None]
        assert any(c.k == 2 for c in ok)
        assert proxies.scored(name, ok)
        pred = proxies.get(name).predict(ok, {}, "unit")
        base = np.asarray([c.merged if name == "private" else c.ensemble for c in ok])
        single = np.asarray([c.k == 1 for c in ok])
        assert np.allclose(pred[single], base[single])  # k = 1: the member's own row
        # a mixture with a unit that has no replicate (its ensemble row given, so only the drift is missing)
        missing = [dataclasses.replace(c, ensemble=c.merged) for c in cases if c.drift is None and c.k > 1]
        with pytest.raises(ValueError, match="replicate"):
            proxies.get(name).predict(missing + ok, {}, "unit")


def test_the_formula_predicts_a_unit_with_its_own_replicate_as_their_mean():
    """merge(m, r) + A/2 = mean(L_m, L_r) when A = 2 (mean − merge): the union of a unit with itself is a member."""
    lm, lr, lmerge, lens = 3.0, 3.2, 2.9, 2.95
    mean = (lm + lr) / 2
    a, b = 2 * (mean - lmerge), mean - lens
    case = Case(("u", "u2"), (0.5, 0.5), "ev", lmerge, None, (lm, lr), "other", None, lens, None, (a, a), (b, b))
    assert proxies.get("private").predict([case], {}, "unit")[0] == pytest.approx(mean)
    assert proxies.get("private-ensemble").predict([case], {}, "unit")[0] == pytest.approx(mean)
    skew = Case(("u", "v"), (0.75, 0.25), "ev", lmerge, None, (lm, lr), "other", None, lens, None, (1.0, 3.0), (0, 0))
    assert proxies.get("private").predict([skew], {}, "unit")[0] == pytest.approx(lmerge + 0.1875 * 1 + 0.1875 * 3)
