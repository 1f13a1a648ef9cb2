"""`unit-shifts`: the merged proxy plus what each unit does in a real union that its member does not in a merge,
fitted per eval set on a few unions.

Why: on targets the seed knows and no unit covers (forgetting), the merge's error is not a size effect (a slope in
k, fitted with the truth in hand, left the ranking where it was) and not a direction the members span: the least-
squares projection of each union's own task vector onto its members' (the best merge there is, chosen with the
union in hand) ranked `bible` at 0.54 and `fiction` at 0.72 on reference-works, where the merge ranks them 0.49 and
0.76. What the unions do show is a per-unit pattern: in reference-works, a union holding manpages forgets the
seed's domains more than its merge says, one holding computing or quotes less, on bible, fiction and pydocs alike.
So, per eval set, with w the mixture's weights:

    log ppl_truth - log ppl_merged ≈ Σ_i a_i · w_i (1 - w_i)

zero for a unit alone (its union is its member), largest at equal shares. The shifts a_i are a light ridge fit on
the trained unions of that eval set, kept only where they predict those unions better than no shift, leave one
union out; otherwise the ranking is the merged one. With no unions it is `merged`.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

# shrinks each shift toward 0 (a w(1-w) feature is at most 1/4, so a shift needs several unions behind it); chosen
# on the three protocol studies' unions (random draws of n/2 and n), out of sample there, among 0.01 and 0.1
RIDGE = 0.1
MIN_FIT_UNIONS = 3  # leave-one-out needs two unions to fit on


def shift_features(cases, units: list[str]) -> np.ndarray:
    """[cases, units]: each unit's w (1 - w) in each case's mixture (0 where it is absent or alone)."""
    rows = np.zeros((len(cases), len(units)))
    col = {u: j for j, u in enumerate(units)}
    for i, c in enumerate(cases):
        for u, w in zip(c.mixture, c.weights):
            rows[i, col[u]] = w * (1.0 - w)
    return rows


def _ridge(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ y)


def _loo_wins(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether the shifts predict each union from the others better than no shift (squared error)."""
    with_shift = 0.0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        with_shift += float((x[i] @ _ridge(x[keep], y[keep]) - y[i]) ** 2)
    return with_shift < float(np.sum(y ** 2))


class UnitShifts:
    name = "unit-shifts"
    fitted = True
    evaluated = False
    summary = ("merged + a shift per unit and eval set, times w(1-w) (none for a unit alone), ridge-fitted on the "
               "unions; kept per eval set only if it wins leave-one-union-out")

    def fit(self, cases, known) -> dict[str, dict]:
        """{eval set: {"units", "shifts", "unions"}} for the eval sets whose shifts were kept."""
        by_eval = defaultdict(list)
        for c in cases:
            by_eval[c.eval_set].append(c)
        out = {}
        for name, group in by_eval.items():
            train = [c for c in group if c.k > 1 and c.key in known]
            if len(train) < MIN_FIT_UNIONS:
                continue
            units = sorted({u for c in group for u in c.mixture})
            x = shift_features(train, units)
            y = np.asarray([known[c.key] - c.merged for c in train])
            if _loo_wins(x, y):
                out[name] = {"units": units, "shifts": _ridge(x, y), "unions": len(train)}
        return out

    def predict(self, cases, known, budget) -> np.ndarray:
        model = self.fit(cases, known)
        pred = np.asarray([c.merged for c in cases], dtype=float)
        for name, m in model.items():
            idx = [i for i, c in enumerate(cases) if c.eval_set == name]
            pred[idx] += shift_features([cases[i] for i in idx], m["units"]) @ m["shifts"]
        return pred


PROXY = UnitShifts()
