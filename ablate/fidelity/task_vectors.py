"""What the parameters say about forgetting: members' and unions' task vectors (θ − θ_seed) measured on a pool.

How to run (from Python; `ablate fidelity` puts the figures in each study's line of FIDELITY.md):
    from ablate.fidelity.task_vectors import geometry
    geometry(pool, study)     # {"member_norm": ..., "member_cosine": ..., "replicate_cosine": ..., ...}

Figures, each a median over what the pool holds:
- member norms and pairwise cosines of the unit members' task vectors;
- replicate cosine: a unit's member against its replicate (same data, another order). If τ = s + p with a shared
  signal s and a private part p, cos = |s|² / (|s|² + |p|²), so 1 − cos is the private share of |τ|²;
- per equal-compute union: its least-squares coefficients on its members' task vectors divided by its weights,
  its norm against the norm of its members' weighted average (what the merge is), and the share of its squared
  norm outside the span of all unit members (the part no merge of these members can produce).
Models are read whole (these are the protocol's sub-million-parameter studies); a large pool is sampled by
`max_unions`.
"""

from __future__ import annotations

import statistics

import numpy as np
from safetensors.numpy import load_file


def flat(pool, model_id: str) -> np.ndarray:
    """Every floating tensor of a member, flattened in name order, float64."""
    tensors = load_file(str(pool.weights_path(model_id)))
    return np.concatenate([tensors[k].astype(np.float64).ravel() for k in sorted(tensors)
                           if np.issubdtype(tensors[k].dtype, np.floating)])


def geometry(pool, study, max_unions: int = 64) -> dict:
    """The medians above for the study's unit members, replicates and equal-compute uniform unions."""
    seed = flat(pool, study.seed["model_id"])
    units = sorted({u for m in pool.iter_metas("unit") if m["seed_id"] == study.seed["model_id"] for u in m["units"]})
    members = {u: study.unit_member(u, required=False) for u in units}
    tau = {u: flat(pool, mid) - seed for u, mid in members.items() if mid}
    names = sorted(tau)
    basis = np.stack([tau[u] for u in names], axis=1)  # [params, n]
    out = {"member_norm": _median([np.linalg.norm(t) for t in tau.values()]),
           "member_cosine": _median([_cos(tau[a], tau[b]) for i, a in enumerate(names) for b in names[i + 1:]])}
    reps = [(u, study.unit_member(u, required=False, replicate=1)) for u in names]
    out["replicate_cosine"] = _median([_cos(tau[u], flat(pool, r) - seed) for u, r in reps if r])
    ratios, norms, outside = [], [], []
    unions = [m for m in pool.iter_metas("union") if m["seed_id"] == study.seed["model_id"]
              and m.get("budget") == "unit" and m.get("replicate", 0) == 0 and set(m["units"]) <= set(names)]
    for meta in unions[:max_unions]:
        t = flat(pool, meta["model_id"]) - seed
        idx = [names.index(u) for u in meta["units"]]
        w = np.asarray(meta.get("weights") or [1 / len(idx)] * len(idx))
        coef, *_ = np.linalg.lstsq(basis[:, idx], t, rcond=None)
        ratios += list(coef / w)
        norms.append(np.linalg.norm(t) / np.linalg.norm(basis[:, idx] @ w))
        every, *_ = np.linalg.lstsq(basis, t, rcond=None)
        outside.append(float(np.sum((t - basis @ every) ** 2) / np.sum(t ** 2)))
    out.update(unions=len(unions[:max_unions]), coefficient_over_weight=_median(ratios),
               union_over_merge_norm=_median(norms), outside_span=_median(outside))
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _median(values) -> float | None:
    values = [float(v) for v in values]
    return statistics.median(values) if values else None
