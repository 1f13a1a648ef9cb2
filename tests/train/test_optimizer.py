"""train.optimizer (issue 33): AdamW's implementation is opt-in, enters ids only when chosen, and a fused
member is reproducible: retrained, or resumed after an interruption, it ends with the same sha256."""

from __future__ import annotations

from dataclasses import asdict, astuple

import pytest
import torch

from ablate.core.config import config_hash
from ablate.core.errors import Interrupted
from ablate.store.index import recipe_id
from ablate.study.context import member_recipe, study_recipe_id
from ablate.train.loop import adamw_kwargs, train_member
from conftest import copy_study

UNIT = ["fortunes-01"]


def _with(cfg, optimizer: str):
    out = cfg.model_copy(deep=True)
    out.train.optimizer = optimizer
    return out


def test_auto_keeps_every_id_and_a_choice_enters_them(study):
    cfg, pool, _, _ = study
    recipe = member_recipe(cfg)
    assert recipe.optimizer == "auto" and "optimizer" not in recipe.key()
    before = {k: v for k, v in asdict(recipe).items() if k not in ("optimizer", "compile")}  # before the knobs
    assert recipe.key() == before and study_recipe_id(cfg) == recipe_id(before) == config_hash(before)
    ids = {name: study_recipe_id(_with(cfg, name)) for name in ("auto", "fused", "foreach", "loop")}
    assert len(set(ids.values())) == 4 and ids["auto"] == study_recipe_id(cfg)
    assert member_recipe(_with(cfg, "fused")).key()["optimizer"] == "fused"


def test_the_implementations_are_the_ones_named():
    assert adamw_kwargs("auto", cuda=False) == {"fused": None}  # torch picks the per-tensor loop on CPU
    assert adamw_kwargs("auto", cuda=True) == {"fused": True}  # as ablate always trained on CUDA
    p = torch.nn.Parameter(torch.zeros(3))
    chosen = {name: torch.optim.AdamW([p], **adamw_kwargs(name, cuda=False)).defaults
              for name in ("fused", "foreach", "loop")}
    assert chosen["fused"]["fused"] and chosen["foreach"]["foreach"]
    assert not chosen["loop"]["foreach"] and not chosen["loop"]["fused"]


@pytest.fixture(scope="module")
def fused_study(study, tmp_path_factory):
    """A copy of the shared study with one fused member: (cfg, pool, that member's meta)."""
    cfg, pool = copy_study(study[0], tmp_path_factory.mktemp("fused"))
    return cfg, pool, train_member(_with(cfg, "fused"), pool, UNIT, log=lambda *a: None)


def test_a_fused_member_has_its_own_id_and_retrains_to_the_same_weights(fused_study):
    cfg, pool, fused_member = fused_study
    default = next(m for m in pool.iter_metas("unit") if m["units"] == UNIT and "optimizer" not in m["recipe"])
    assert fused_member["model_id"] != default["model_id"] and fused_member["recipe"]["optimizer"] == "fused"
    torch.manual_seed(4321)  # whatever state the caller's generator is in
    again = train_member(_with(cfg, "fused"), pool, UNIT, force=True, log=lambda *a: None)
    assert again["model_id"] == fused_member["model_id"] and again["sha256"] == fused_member["sha256"]


def test_a_resumed_fused_member_ends_as_the_uninterrupted_one(study_copy, fused_study):
    cfg, pool, _, _ = study_copy  # has no fused member yet
    fused, fused_member = _with(cfg, "fused"), fused_study[2]
    with pytest.raises(Interrupted):
        train_member(fused, pool, UNIT, stop_after=3, log=lambda *a: None)
    torch.manual_seed(999)  # a new process would start from another generator state
    resumed = train_member(fused, pool, UNIT, log=lambda *a: None)
    assert resumed["resumed_from_step"] == 3 and resumed["sha256"] == fused_member["sha256"]


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
    cfg = study[0]
    on = cfg.model_copy(deep=True)
    on.train.compile = True
    assert "compile" not in member_recipe(cfg).key() and "compile" not in seed_recipe(cfg).key()
    assert member_recipe(on).key()["compile"] and seed_recipe(on).key()["compile"]
    assert study_recipe_id(on) != study_recipe_id(cfg)
