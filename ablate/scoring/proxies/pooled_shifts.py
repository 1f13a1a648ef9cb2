"""`pooled-shifts`: `unit-shifts` with the shifts shared across the eval sets no unit covers, each set free to
depart from them under a stronger ridge.

Why: `unit-shifts` fits a shift per unit and eval set from that set's unions alone, a few numbers from a few
unions. On reference-works the pattern is the same on every set the seed knows (a union holding manpages forgets
bible, fiction and pydocs more than its merge says, one holding computing or quotes less), so the sets can lend each
other strength: per group of eval sets (the seed's own domains no unit covers; the sets new to both; each covered set
alone, as in `unit-shifts`), with w the mixture's weights,

    log ppl_truth - log ppl_merged ≈ Σ_i (b_i + d_{i,set}) · w_i (1 - w_i)

b shared by the group (ridge RIDGE), d per set (ridge SET_RIDGE, larger: a set departs from the group only where
its unions insist). A set keeps its shifts only where they predict its unions better than no shift, each union left
out of every set of the group in turn; otherwise it ranks as the merge. With no unions it is `merged`.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from ablate.scoring.proxies.unit_shifts import MIN_FIT_UNIONS, RIDGE, shift_features

SET_RIDGE = 1.0  # 10x the shared ridge: one setting, not tuned (the protocol measures it)


def _group(cases) -> str:
    """The eval set's group: `seed` (no unit covers it, the seed trained on it), `other` (new to both), or the
    set itself where a unit covers it (relation `own` for some mixture)."""
    relations = {c.relation for c in cases}
    return cases[0].eval_set if "own" in relations else ("seed" if "seed" in relations else "other")


def _fit(blocks: list[tuple[np.ndarray, np.ndarray]], n_units: int) -> np.ndarray:
    """[sets, units] shifts b + d_s from each set's (design, residuals), by one ridge solve."""
    n_sets = len(blocks)
    width = n_units * (1 + n_sets)
    xtx, xty = np.zeros((width, width)), np.zeros(width)
    for s, (x, y) in enumerate(blocks):
        full = np.zeros((len(y), width))
        full[:, :n_units] = x
        full[:, n_units * (1 + s):n_units * (2 + s)] = x
        xtx += full.T @ full
        xty += full.T @ y
    penalty = np.r_[np.full(n_units, RIDGE), np.full(n_units * n_sets, SET_RIDGE)]
    theta = np.linalg.solve(xtx + np.diag(penalty), xty)
    return theta[:n_units] + theta[n_units:].reshape(n_sets, n_units)


class PooledShifts:
    name = "pooled-shifts"
    fitted = True
    evaluated = False
    summary = ("unit-shifts with the shifts shared across the eval sets no unit covers (the seed's own; those new "
               "to both), each set departing under a stronger ridge; kept per set only if it wins leave-one-union-out")

    def fit(self, cases, known) -> dict[str, dict]:
        """{eval set: {"units", "shifts", "unions"}} for the eval sets whose shifts were kept."""
        by_eval = defaultdict(list)
        for c in cases:
            by_eval[c.eval_set].append(c)
        groups = defaultdict(list)
        for name, group in by_eval.items():
            groups[_group(group)].append(name)
        out = {}
        for names in groups.values():
            out.update(self._fit_group({n: by_eval[n] for n in names}, known))
        return out

    def _fit_group(self, sets: dict[str, list], known) -> dict[str, dict]:
        units = sorted({u for group in sets.values() for c in group for u in c.mixture})
        train = {n: [c for c in group if c.k > 1 and c.key in known] for n, group in sets.items()}
        train = {n: t for n, t in train.items() if len(t) >= MIN_FIT_UNIONS}
        if not train:
            return {}
        names = sorted(train)
        blocks = [(shift_features(train[n], units), np.asarray([known[c.key] - c.merged for c in train[n]])) for n in names]
        shifts = _fit(blocks, len(units))
        unions = sorted({(c.mixture, c.weights) for n in names for c in train[n]})
        loo = {n: 0.0 for n in names}
        for left in unions:  # each union out of every set of the group, the shifts refitted without it
            keep = [[(c.mixture, c.weights) != left for c in train[n]] for n in names]
            fitted = _fit([(x[k], y[k]) for (x, y), k in zip(blocks, map(np.asarray, keep))], len(units))
            for s, n in enumerate(names):
                out_rows = ~np.asarray(keep[s])
                x, y = blocks[s]
                loo[n] += float(np.sum((x[out_rows] @ fitted[s] - y[out_rows]) ** 2))
        return {n: {"units": units, "shifts": shifts[s], "unions": len(train[n])}
                for s, n in enumerate(names) if loo[n] < float(np.sum(blocks[s][1] ** 2))}

    def predict(self, cases, known, budget) -> np.ndarray:
        model = self.fit(cases, known)
        pred = np.asarray([c.merged for c in cases], dtype=float)
        for name, m in model.items():
            idx = [i for i, c in enumerate(cases) if c.eval_set == name]
            pred[idx] += shift_features([cases[i] for i in idx], m["units"]) @ m["shifts"]
        return pred


PROXY = PooledShifts()
