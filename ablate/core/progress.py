"""What the terminal shows: rich progress bars on stderr, result lines on stdout."""

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
    # labels and fields carry user names (units, eval sets, files): plain text, never console markup
    progress = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                        MofNCompleteColumn(), TextColumn(text, markup=False), TimeElapsedColumn(),
                        TextColumn("ETA"), TimeRemainingColumn(),
                        console=console, disable=quiet(), transient=False)
    with progress:
        task = progress.add_task(description, total=total, completed=completed, **fields)

        def update(advance: int = 1, **values):
            progress.update(task, advance=advance, **values)

        yield update


def final_loss_window(steps: int) -> int:
    """How many last steps the recorded final loss averages (one step's loss is too noisy)."""
    return max(1, steps // 10)


def _final_loss_text(meta: dict) -> str:
    if meta.get("final_loss") is None:  # an imported seed: not trained here
        return "final loss n/a"
    # the mean of the tail, not the last step the progress bar showed: say so
    n = final_loss_window(len(meta.get("loss_curve") or []) or meta["steps"])
    return f"final loss {meta['final_loss']:.3f} (mean of the last {n} step{'s' * (n > 1)})"


def price_line(meta: dict) -> str:
    """The one-line price tag printed after a run."""
    truth = f" (budget {meta['budget']})" if meta["kind"] == "union" and meta.get("budget") else ""
    return (f"{meta['model_id']}: {meta['kind']} {','.join(meta['units']) or '-'}{truth}; {meta['n_params']:,} params; "
            f"{meta['train_tokens']:,} tokens in {meta['steps']} steps, {meta['wall_s']:.1f} s "
            f"({meta['train_tokens'] / max(1e-9, meta['wall_s']):,.0f} tok/s), {_final_loss_text(meta)}; "
            f"{meta['energy_kwh'] * 1000:.3f} Wh, "
            f"{meta['co2_kg'] * 1000:.3f} g CO2e [{meta['energy_method']}]"
            + (" (reused)" if meta.get("reused") else ""))
