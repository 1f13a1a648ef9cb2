"""ablate/study/context.py: a member's recipe and id; a training setting enters ids only when it is chosen."""

from __future__ import annotations

from dataclasses import asdict, astuple

from ablate.core.config import config_hash
from ablate.store.index import recipe_id
from ablate.study.context import member_recipe, study_recipe_id


def _with(cfg, optimizer: str):
    out = cfg.model_copy(deep=True)
    out.train.optimizer = optimizer
    return out


def test_auto_keeps_every_id_and_a_choice_enters_them(study):
    cfg, pool, _, _ = study
    recipe = member_recipe(cfg)
    assert recipe.optimizer == "auto" and "optimizer" not in recipe.key()
    before = {k: v for k, v in asdict(recipe).items() if k not in ("optimizer", "compile", "start")}  # before the knobs
    assert recipe.key() == before and study_recipe_id(cfg) == recipe_id(before) == config_hash(before)
    ids = {name: study_recipe_id(_with(cfg, name)) for name in ("auto", "fused", "foreach", "loop")}
    assert len(set(ids.values())) == 4 and ids["auto"] == study_recipe_id(cfg)
    assert member_recipe(_with(cfg, "fused")).key()["optimizer"] == "fused"


def test_compile_enters_ids_only_when_on_and_ids_without_it_stay_as_they_were(study):
    from ablate.study.context import Recipe, member_id
    from ablate.train.seed import seed_recipe

    metas = [{"unit_id": "fortunes-00", "data_sha256": "ab" * 32}]
    plain = Recipe(64, 8, 2e-3, 0, 0.1, 0.1, 0.9, 0.95, 1.0, 1, 0)
    # ids computed before train.compile entered them: an existing pool finds its members under the same names
    assert member_id("seed-x", metas, plain, 0) == "unit-fortunes-00-e6109773a4"
    assert member_id("seed-x", metas, Recipe(*astuple(plain)[:11], "fused"), 0) == "unit-fortunes-00-39fbe9ed90"
    compiled = Recipe(*astuple(plain)[:11], compile=True)
    assert compiled.key()["compile"] is True and member_id("seed-x", metas, compiled, 0) != member_id(
        "seed-x", metas, plain, 0)  # compiling changes a member's floats: another member
    # a run started from its units' merge (train.start) is another run; the seed start adds nothing
    assert member_id("seed-x", metas, Recipe(*astuple(plain)[:11], start="seed"), 0) == "unit-fortunes-00-e6109773a4"
    assert Recipe(*astuple(plain)[:11], start="merge").key()["start"] == "merge"
    cfg = study[0]
    on = cfg.model_copy(deep=True)
    on.train.compile = True
    assert "compile" not in member_recipe(cfg).key() and "compile" not in seed_recipe(cfg).key()
    assert member_recipe(on).key()["compile"] and seed_recipe(on).key()["compile"]
    assert study_recipe_id(on) != study_recipe_id(cfg)
