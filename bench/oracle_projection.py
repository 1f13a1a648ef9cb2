"""Can any merge of the members rank forgetting? The best one there is, chosen with each union in hand.

How to run (on a fidelity study whose pool `ablate fidelity` built; ~1.5 min per 11 unions at one thread):
    .venv/bin/python bench/oracle_projection.py configs/fidelity/reference-works.yaml [--out FILE.json]

Not a speed benchmark: a measurement of the proxy's limit on targets no unit covers. For each equal-compute uniform
union U (replicate 0), its task vector τ_U = θ_U − θ_seed is projected by least squares onto its members' task
vectors: c = argmin |τ_U − Σ_i c_i τ_i|. The model θ_seed + Σ_i c_i τ_i is the best merge of those members for that
union (the merge itself is c_i = w_i); it is evaluated on every text eval set and ranked against the unions' own
perplexities (read from the pool, as the merge's are: only the projection is evaluated), beside the merge. If the oracle projection ranks a target no better than the merge, what the union
does there lies outside its members' span, and no weighting, scaling or tilt of the members can predict it.
Measured (2026-12, the three protocol studies; seed-known targets, Spearman against the trained unions): merge /
oracle projection: literary-code manpages 0.82 / 0.70, webster 0.89 / 0.80; reference-works bible 0.49 / 0.54,
fiction 0.76 / 0.72, pydocs 0.99 / 0.99; six-units computing 0.86 / 0.83.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from ablate.core.config import load_config
from ablate.fidelity.task_vectors import flat
from ablate.models.model import load_member, unique_state
from ablate.scoring import proxies
from ablate.scoring.evaluate import evaluate_tokens
from ablate.scoring.proxies import wkey
from ablate.store.pool import Pool
from ablate.study.budgets import seed_known, target_kind
from ablate.study.context import load_study


def uniform_unions(pool: Pool, seed_id: str) -> dict[tuple, str]:
    """{units: model id} of the equal-compute, equal-weights unions of data order 0."""
    out = {}
    for m in pool.iter_metas("union"):
        w = m.get("weights") or []
        if (m["seed_id"] == seed_id and m.get("budget") == "unit" and not m.get("replicate")
                and len(w) > 1 and max(w) - min(w) < 1e-6):
            out.setdefault(tuple(m["units"]), m["model_id"])
    return out


def text_sets(study) -> list[str]:
    """The text eval sets: a task's stored rows score the answer's tokens only, which evaluate_tokens does not."""
    return [e for e in study.eval_tokens if e not in study.tasks]


def log_ppl(study, model) -> dict[str, float]:
    cfg = study.cfg
    return {e: float(np.log(evaluate_tokens(model, study.eval_tokens[e], study.byte_len, seq_len=cfg.eval.seq_len,
                                            batch_size=cfg.eval.batch_size)["ppl"]))
            for e in text_sets(study)}


def with_task_vector(model, seed_state: dict, names: list[str], vector: np.ndarray):
    """The seed model with `vector` (flat, in task_vectors.flat's order) added to its floating tensors."""
    state, at = {}, 0
    for name in names:
        t = seed_state[name]
        state[name] = t + torch.from_numpy(vector[at:at + t.numel()]).view_as(t).to(t.dtype)
        at += t.numel()
    model.load_state_dict(state, strict=False)
    return model


def measure(config: str) -> dict:
    torch.set_num_threads(1)
    cfg = load_config(config, [])
    pool = Pool(cfg.pool)
    study = load_study(cfg, pool)
    seed_id = study.seed["model_id"]
    model = load_member(pool, seed_id)
    seed_state = {k: v.detach().clone() for k, v in unique_state(model).items() if v.is_floating_point()}
    names = sorted(seed_state)  # task_vectors.flat's order: floating tensors by name
    seed = flat(pool, seed_id)
    unions = uniform_unions(pool, seed_id)
    units = sorted({u for key in unions for u in key})
    tau = {u: flat(pool, study.unit_member(u)) - seed for u in units}
    truths = proxies.load_truths(pool, "unit")  # the unions' own rows, and the merges' below: already scored
    merged = {c.key: c.merged for c in proxies.load_cases(pool)}
    rows = []
    for key, union_id in sorted(unions.items()):
        basis = np.stack([tau[u] for u in key], axis=1)
        coef = np.linalg.lstsq(basis, flat(pool, union_id) - seed, rcond=None)[0]
        at = (key, wkey([1.0 / len(key)] * len(key)))
        rows.append({"units": list(key), "coef_over_weight": (coef * len(key)).round(3).tolist(),
                     "union": {e: truths[(*at, e)] for e in text_sets(study)},
                     "merge": {e: merged[(*at, e)] for e in text_sets(study)},
                     "projection": log_ppl(study, with_task_vector(model, seed_state, names, basis @ coef))})
        print(f"{'+'.join(key)}: coefficients / weights {rows[-1]['coef_over_weight']}", file=sys.stderr)
    known = seed_known(cfg, text_sets(study), pool)
    ranking = {}
    for e in text_sets(study):
        truth = [r["union"][e] for r in rows]
        ranking[e] = {"kind": target_kind(e, cfg.units.domains, known),
                      **{m: float(spearmanr([r[m][e] for r in rows], truth).statistic)
                         for m in ("merge", "projection")}}
    return {"study": cfg.name, "unions": len(rows), "ranking": ranking, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    result = measure(args.config)
    for e, r in sorted(result["ranking"].items(), key=lambda kv: kv[1]["kind"]):
        print(f"{result['study']} {e} ({r['kind']}): Spearman merge {r['merge']:.2f}, oracle projection "
              f"{r['projection']:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
