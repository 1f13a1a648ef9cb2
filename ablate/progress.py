"""Rich progress bars on stderr, shared by the long stages (training, sweeps)."""

from __future__ import annotations

import os
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)  # progress bars and warnings
out = Console(highlight=False, soft_wrap=True)  # results, so they pipe cleanly


def quiet() -> bool:
    return os.environ.get("ABLATE_QUIET", "") not in ("", "0")


@contextmanager
def bar(description: str, total: int, completed: int = 0, fields: dict | None = None):
    """Yields update(advance, **fields). Extra fields show as text (tokens/s, loss, mixtures/min)."""
    fields = dict(fields or {})
    text = " ".join(f"{k}={{task.fields[{k}]}}" for k in fields)
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn(text), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        console=console, disable=quiet(), transient=False)
    with progress:
        task = progress.add_task(description, total=total, completed=completed, **fields)

        def update(advance: int = 1, **values):
            progress.update(task, advance=advance, **values)

        yield update
