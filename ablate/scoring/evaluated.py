"""Rows for an evaluated proxy, whichever way it is evaluated: one entry point for search, ranks and fidelity.

How to run (from Python):
    from ablate.scoring.evaluated import score_proxy
    ids = score_proxy(study, [(["fiction-00", "bible-00"], [0.5, 0.5])], "ensemble")   # {(mixture, weights): id}

`merged` and `task-sum` build a model per mixture and evaluate it (score.score_built_models); `scaled@β`
builds seed + α(k)·Σ w_i τ_i the same way (proxies/scaled.py); `ensemble` builds nothing: it mixes the
members' cached per-token losses (scoring/ensemble.py). A caller that asked the registry's `build` directly
would score an ensemble as a merge: this module is why it never has to.
"""

from __future__ import annotations

import ablate.scoring.proxies as proxies
from ablate.scoring.ensemble import METHOD as ENSEMBLE
from ablate.scoring.ensemble import score_ensemble
from ablate.scoring.proxies import scaled
from ablate.scoring.score import score_built_models


def score_proxy(study, mixtures: list[tuple[list[str], list[float]]], method: str, label: str | None = None,
                force: bool = False) -> dict[tuple, str]:
    """Write (unless cached, or `force`) the method's rows for every (mixture, weights); {(mixture, weights): id}."""
    if method == ENSEMBLE:
        return score_ensemble(study, mixtures, force=force, label=label or method)
    if method.startswith("scaled@"):
        build = scaled.builder(float(method.split("@", 1)[1]))
    else:
        build = proxies.get(method).build
    return score_built_models(study, mixtures, method, build, label=label, force=force)
