"""Fault injection for the crash tests: die at a named point, as a killed job would.

    ABLATE_FAULT=publish.staged:1 ablate train-partition fiction-00   # SIGKILL at the 1st hit

Points sit where a crash is most dangerous (after a checkpoint write, between a
member's weights and its sidecar, between a results file and its index rows,
inside an index transaction). Unset, `point()` costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def point(label: str) -> None:
    spec = os.environ.get("ABLATE_FAULT")
    if not spec:
        return
    want, _, nth = spec.partition(":")
    if want != label:
        return
    _hits[label] = _hits.get(label, 0) + 1
    if _hits[label] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
