"""What the cost view and the report price: the study's own members, never another recipe's."""

from __future__ import annotations

import math

from ablate.fidelity.report import Priced, cost_markdown, costs, priced
from ablate.store.index import Index
from ablate.store.pool import Pool
from ablate.train.loop import train_member
from ablate.workflows.steps import score_mixture

quiet = dict(log=lambda *a: None)
PAIR = ["fortunes-00", "literature-00"]


def _cost_rows(pool, recipe):
    cols, rows = Index(pool).query("SELECT * FROM ablation_cost WHERE recipe_id = ?", [recipe])
    return {tuple(r[cols.index("mixture")]): dict(zip(cols, r)) for r in rows}


def test_costs_count_only_the_study_recipes_members(study_copy):
    cfg, pool, units, _ = study_copy
    other = cfg.model_copy(deep=True)
    other.train.lr = 1e-3  # another experiment's member of the same unit (a few steps of the tiny model)
    extra = train_member(other, pool, ["fortunes-00"], **quiet)
    score_mixture(cfg, pool, PAIR, eval_names=["fortunes"])
    scope = priced(cfg, pool)
    wall = dict(Index(pool).query("SELECT model_id, wall_s FROM models")[1])
    own = {u: next(m for m in pool.iter_metas("unit") if m["units"] == [u] and m["model_id"] != extra["model_id"])
           for u in units}
    assert extra["model_id"] not in {m["model_id"] for m in own.values()} and wall[extra["model_id"]] > 0

    for _ in range(2):  # as written, and rebuilt from the sidecars alone
        row = _cost_rows(pool, scope.recipe_id)[tuple(PAIR)]
        assert math.isclose(row["unit_train_s"], sum(wall[own[u]["model_id"]] for u in PAIR), rel_tol=1e-9)
        assert row["retrain_s"] is not None  # the study's union of the pair is priced beside it
        assert tuple(PAIR) not in _cost_rows(pool, Priced(None, "x", 0, 0).recipe_id)
        Index(pool).rebuild()

    c = costs(pool, scope)  # the report's figures: 4 members, never the 5th
    assert c["n_units"] == 4 and c["n_mixtures"] == 1
    assert math.isclose(c["wall_s"]["unit_trainings"], sum(wall[m["model_id"]] for m in own.values()), rel_tol=1e-9)
    text = "\n".join(cost_markdown(pool, scope))
    assert scope.recipe_id in text and "not counted" in text


def test_an_empty_report_says_n_a_not_n_ax(tmp_path):
    from conftest import tiny_config

    cfg = tiny_config(tmp_path)
    pool = Pool(cfg.pool)
    pool.root.mkdir(parents=True)  # a pool with nothing trained or scored yet
    text = "\n".join(cost_markdown(pool, priced(cfg, pool)))
    ratios = [line.rsplit("|", 2)[1].strip() for line in text.splitlines() if line.startswith("| energy")]
    assert ratios == ["n/a"] and "n/ax" not in text
