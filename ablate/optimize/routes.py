"""The routes of `ablate optimize`: one entry per way to optimize mixture weights (as scoring/proxies/ is for
proxy methods; mergekit's merge_methods/registry.py); `get(name)`.

How to run:
    ablate optimize --target quotes --route ensemble
    get("ensemble").run(cfg, pool, study, plan, caps)     # what optimization.run_optimization does

Every route follows the protocol of optimize/protocol.py and answers with the merged route's result layout, so
storing, gating and validating never ask which route ran. A new route is one module defining its `ROUTE`
(protocol.Route: name, summary, run(cfg, pool, study, plan, caps), optionally key(pool, study, plan)) and one
line here.
"""

from __future__ import annotations

from ablate.core.errors import UsageError
from ablate.optimize.ensemble_route import ROUTE as ENSEMBLE
from ablate.optimize.merged_route import ROUTE as MERGED
from ablate.optimize.protocol import Route
from ablate.optimize.regression_route import ROUTE as REGRESSION

REGISTRY: dict[str, Route] = {r.name: r for r in (MERGED, ENSEMBLE, REGRESSION)}
ROUTES = tuple(REGISTRY)


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> Route:
    if name not in REGISTRY:
        raise UsageError(f"--route must be one of {', '.join(ROUTES)}, not {name!r}")
    return REGISTRY[name]


def help_text() -> str:
    """`--route`'s help: every route and its summary, in the table's order."""
    parts = [f"{r.name} ({r.summary})" for r in REGISTRY.values()]
    return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]
