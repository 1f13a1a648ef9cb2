"""The routes of `ablate optimize` are a registry: one common signature, one clear error for a name it lacks, and
the CLI's --route help is the registry's."""

from __future__ import annotations

import inspect

import pytest

from ablate.cli.optimize import ROUTE_HELP
from ablate.core.errors import UsageError
from ablate.optimize import routes
from ablate.optimize.protocol import Route


def test_every_route_has_the_common_signature():
    assert routes.ROUTES == ("merged", "ensemble", "regression") == tuple(routes.names())
    for name, route in routes.REGISTRY.items():
        assert isinstance(route, Route) and route.name == name and route.summary
        assert list(inspect.signature(route.run).parameters) == ["cfg", "pool", "study", "plan", "caps"], name
        assert list(inspect.signature(route.key).parameters) == ["pool", "study", "plan"], name
        assert routes.get(name) is route


def test_an_unknown_route_is_one_usage_error_naming_the_registered_ones():
    with pytest.raises(UsageError) as caught:
        routes.get("bogus")
    assert str(caught.value) == "--route must be one of merged, ensemble, regression, not 'bogus'"


def test_the_cli_help_is_the_registry_s():
    """Written out in cli/optimize.py (the registry loads torch; `ablate --help` must not): kept equal here."""
    assert ROUTE_HELP == routes.help_text()
    assert all(f"{r.name} ({r.summary})" in ROUTE_HELP for r in routes.REGISTRY.values())
