"""The ensemble route: the same fit/held protocol as the merged route, on the members' cached token losses."""

from __future__ import annotations

import numpy as np
import pytest

from ablate.models.model import load_member
from ablate.optimize.ensemble_route import TokenSpace, optimize_ensemble
from ablate.optimize.losses import window_nll
from ablate.optimize.objectives import parse_objective
from ablate.optimize.protocol import split_windows
from ablate.optimize.simplex import repetition_caps
from ablate.study.context import load_study

UNITS = ["fortunes-00", "fortunes-01", "literature-00", "literature-01"]


def test_cached_windows_are_the_members_own_windows(study_copy):
    """A member alone in the token space gives, window for window, what a forward pass over those held
    windows gives: the cache's window order is the split's."""
    cfg, pool, _, _ = study_copy
    st = load_study(cfg, pool, ["literature"])
    split = split_windows(st, ["literature"], cfg.optimize.fit_fraction, cfg.optimize.split_seed)
    member = st.unit_member(UNITS[2])
    space = TokenSpace(st, [member], split)
    direct = window_nll(load_member(pool, member), split["literature"]["held"], 8)
    np.testing.assert_allclose(space.held_windows(np.ones(1))["literature"], direct, rtol=1e-5)


def test_the_route_descends_on_what_it_sees_and_reports_on_what_it_did_not(study_copy):
    cfg, pool, _, _ = study_copy
    st = load_study(cfg, pool, ["literature"])
    objective = parse_objective(["literature"], ["fortunes", "literature"])
    caps = repetition_caps([4096] * 4, 4096, cfg.optimize.max_epochs)
    first = optimize_ensemble(st, UNITS, objective, caps, log=lambda *a: None)
    w = np.asarray(first["weights"])
    assert w.sum() == pytest.approx(1) and (w >= 0).all() and (w <= caps + 1e-9).all()
    assert first["fit"]["optimized"] <= first["fit"]["uniform"] + 1e-9  # mirror descent on the fit windows
    held = first["held"]
    assert held["gain"] == pytest.approx(held["uniform"] - held["optimized"])
    assert held["gain_low"] <= held["gain"] <= held["gain_high"]
    assert optimize_ensemble(st, UNITS, objective, caps, log=lambda *a: None)["weights"] == first["weights"]
