"""train.optimizer (issue 33): AdamW's implementation is opt-in, enters ids only when chosen, and a fused
member is reproducible: retrained, or resumed after an interruption, it ends with the same sha256."""

from __future__ import annotations

import pytest
import torch

from ablate.core.errors import Interrupted
from ablate.train.loop import adamw_kwargs, train_member

from conftest import copy_study

UNIT = ["fortunes-01"]


def _with(cfg, optimizer: str):
    out = cfg.model_copy(deep=True)
    out.train.optimizer = optimizer
    return out


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
