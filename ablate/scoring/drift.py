"""Private drift: how much of a member's loss is its own run's, measured from a second member of the same unit.

How to run (from Python; `ablate fidelity` does it for studies with `fidelity.unit_replicates` ≥ 1):
    from ablate.scoring.drift import score_drift
    score_drift(study, ["fiction-00", "bible-00"])   # rows per unit with a replicate member, every eval set

Why: a member's task vector (member − seed) is the unit's signal plus a private part that depends on its data
order; two members of one unit share the first and not the second. A real union keeps a private part of its own
at full size, while the average of k members shrinks theirs (cosine ≈ 0.35 between members: about 1/√k), so a
merge sits closer to the seed than any union and forgets less. On the seed's own domains that is the quantity
being ranked (DESIGN.md, "What the ensemble fixed, and what it did not").

Per unit u with member m and replicate member r (`train-partition` again with another data order), on each
eval set, three rows under methods of their own (mixture [u]):
- `replicate`: r alone (its per-token losses are cached like any member's, so the ensemble reads them too);
- `replicate-merge`: the average of m and r (the unit's signal, private part halved);
- `replicate-ensemble`: m and r mixed per token (the ensemble's bonus from mixing two runs of one unit).
From them (proxies/private.py, `penalties`): the merge's private penalty A = 2·(mean(L_m, L_r) − L_merge) (a quadratic loss around
the signal: halving an uncorrelated private part removes half of its excess loss) and the ensemble's mixing
bonus B = mean(L_m, L_r) − L_ensemble, in log perplexity. The proxies that use them: scoring/proxies/private.py.
"""

from __future__ import annotations

import time

import numpy as np

import ablate.scoring.proxies as proxies
from ablate.core.energy import Meter
from ablate.core.progress import bar
from ablate.scoring.ensemble import eval_set_bytes, member_nll, mixed_nll, segment_sums
from ablate.scoring.evaluate import nll_stats
from ablate.scoring.inplace import merged_model
from ablate.scoring.proxies.private import ENSEMBLE, MERGE, REPLICATE
from ablate.scoring.score import evaluate_rows, study_row
from ablate.scoring.tasks import predicted_per_window
from ablate.store.results import attach_cost, existing_rows, row_id, write_rows


def replicate_pairs(study, units: list[str], replicate: int = 1) -> dict[str, tuple[str, str]]:
    """{unit: (its member, its replicate member)} for the units whose replicate is in the pool."""
    out = {}
    for u in units:
        other = study.unit_member(u, required=False, replicate=replicate)
        if other is not None:
            out[u] = (study.unit_member(u), other)
    return out


def score_drift(study, units: list[str], force: bool = False) -> int:
    """Write the three drift rows of every unit with a replicate member (cached rows are kept unless `force`);
    returns how many units were measured."""
    pairs = replicate_pairs(study, units)
    if not pairs:
        return 0
    cfg, pool = study.cfg, study.pool
    done = set() if force else existing_rows(pool, study.precision)
    seq_len = cfg.eval.seq_len
    rows, model = [], None
    with Meter(cfg.energy) as meter, bar("private drift", len(pairs)) as update:
        for u, (member, other) in pairs.items():
            merge_mid = proxies.model_id(MERGE, [member, other], [0.5, 0.5])
            if force or not all(row_id(MERGE, merge_mid, ev, seq_len) in done for ev in study.evals):
                t0 = time.perf_counter()
                model = merged_model(pool, study.seed["model_id"], [member, other], [0.5, 0.5],
                                     full_hash=cfg.verify_hash, device=study.device, model=model)
                rows += evaluate_rows(study, model, method=MERGE, mixture=[u], weights=[1.0], model_id=merge_mid,
                                      merge_s=time.perf_counter() - t0, skip=done)
            rows += _cached_rows(study, u, member, other, done, force)
            update(1)
    attach_cost(rows, meter.result)
    write_rows(pool, rows)
    return len(pairs)


def _cached_rows(study, unit: str, member: str, other: str, done: set, force: bool) -> list:
    """The `replicate` and `replicate-ensemble` rows, from the two members' per-token losses (cached once)."""
    seq_len = study.cfg.eval.seq_len
    ens_mid = proxies.model_id(ENSEMBLE, [member, other], [0.5, 0.5])
    todo = [ev for ev in study.evals if force or row_id(REPLICATE, other, ev, seq_len) not in done
            or row_id(ENSEMBLE, ens_mid, ev, seq_len) not in done]
    if not todo:
        return []
    mine, (theirs, measured) = member_nll(study, member)[0], member_nll(study, other)
    rows = []
    for ev in todo:
        d = ev["domain"]
        sizes = predicted_per_window(ev, seq_len)
        n_bytes = eval_set_bytes(study, ev)
        for method, mid, per_token, rep in ((REPLICATE, other, theirs[d], 1),
                                            (ENSEMBLE, ens_mid, mixed_nll(np.stack([mine[d], theirs[d]]),
                                                                          [0.5, 0.5]), 0)):
            stats = nll_stats(float(per_token.sum()), int(per_token.size), n_bytes,
                              (measured.get(d) or {}).get("eval_s", 0.0) if method == REPLICATE else 0.0,
                              segment_sums(per_token, sizes))
            row = study_row(study, ev, stats, method=method, mixture=[unit], weights=[1.0], model_id=mid,
                            n_nonembed=0, device=study.device, replicate=rep)
            row["flops"] = (measured.get(d) or {}).get("flops", 0.0) if method == REPLICATE else 0.0
            rows.append(row)
    return rows
