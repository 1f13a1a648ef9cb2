"""What the terminal shows: rich progress bars on stderr, result lines on stdout.

How to run (every long loop of ablate reports through `bar`):
    with bar("sweep", 15, fields={"rate": "-"}) as update:
        update(1, rate="12.3")

On a terminal it is a rich bar; with stderr going to a file (a log, CI, nohup) a bar would print nothing until it
ends, so it is a plain line every PLAIN_EVERY_S seconds: "sweep: 5/15 (33 %), rate=12.3, 110 s elapsed, ETA 220 s".
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column

console = Console(stderr=True)  # progress bars and warnings
out = Console(highlight=False, soft_wrap=True)  # results, so they pipe cleanly


def quiet() -> bool:
    return os.environ.get("ABLATE_QUIET", "") not in ("", "0")


# A bar line is never wider than this: on a wide terminal the bar stays readable instead of spanning it.
WIDEST = 100
# Off a terminal: a progress line at most this often (and one at the end), read from `clock` (tests replace it).
PLAIN_EVERY_S = 10.0
clock = time.monotonic


class _FittedProgress(Progress):
    """Progress whose line fits the terminal by shortening the description and the bar, never the numbers.

    Rich shrinks every column of a line too long for the terminal, so at 80 columns a training bar read
    "0:0… ETA -:--…". Here the count, fields and times are fixed-width columns (no_wrap) and only the
    description (cut with "…") and the bar (ratio columns) give way; the line spans min(terminal, WIDEST)."""

    def __init__(self, *columns, console: Console, **options):
        self._screen = console  # Progress renders once inside its own __init__, before self.console exists
        super().__init__(*columns, console=console, **options)

    def make_tasks_table(self, tasks):
        table = super().make_tasks_table(tasks)
        table.width = min(self._screen.width, WIDEST)
        return table


@contextmanager
def bar(description: str, total: int, completed: int = 0, fields: dict | None = None, labels: dict | None = None,
        reused: str | None = None):
    """Yields update(advance, **fields). Extra fields show as text: `key=value`, or as `labels[key]` with the
    value in place of {} when the key alone would not say what it is ({"rate": "{} mixtures/min"}).
    Nothing to do (total <= completed) prints one line saying so and what was reused (`reused`, or the count
    already done), never a "0/0 … ETA -:--:--" bar."""
    if total <= completed:
        if not quiet():
            console.print(f"{description}: nothing to do, "
                          f"{reused or (f'all {total} reused from earlier runs' if total else 'no work left')}",
                          markup=False, highlight=False)
        yield lambda advance=1, **values: None
        return
    fields, labels = dict(fields or {}), dict(labels or {})
    if not console.is_terminal:
        with _plain_bar(description, total, completed, fields, labels) as update:
            yield update
        return
    text = " ".join(labels.get(k, f"{k}={{}}").replace("{}", f"{{task.fields[{k}]}}") for k in fields)
    # labels and fields carry user names (units, eval sets, files): plain text, never console markup
    def fixed():
        return Column(no_wrap=True)

    progress = _FittedProgress(
        TextColumn("{task.description}", style="bold", markup=False,
                   table_column=Column(ratio=2, no_wrap=True, overflow="ellipsis")),
        BarColumn(bar_width=None, table_column=Column(ratio=1)),
        MofNCompleteColumn(table_column=fixed()), TextColumn(text, markup=False, table_column=fixed()),
        TimeElapsedColumn(table_column=fixed()), TextColumn("ETA", table_column=fixed()),
        TimeRemainingColumn(table_column=fixed()),
        console=console, disable=quiet(), transient=False, expand=True)
    with progress:
        task = progress.add_task(description, total=total, completed=completed, **fields)

        def update(advance: int = 1, **values):
            progress.update(task, advance=advance, **values)

        yield update


@contextmanager
def _plain_bar(description: str, total: int, completed: int, fields: dict, labels: dict):
    """`bar` off a terminal: one plain line every PLAIN_EVERY_S seconds of work, and one when it ends."""
    state = {"done": completed, "start": clock(), "said": clock(), "last": "", **fields}

    def line(now: float) -> str:
        done, elapsed = state["done"], now - state["start"]
        shown = [labels.get(k, f"{k}={{}}").replace("{}", str(state[k])) for k in fields]
        rate = (done - completed) / elapsed if elapsed > 0 else 0.0
        eta = [f"ETA {(total - done) / rate:.0f} s"] if rate > 0 and done < total else []
        return ", ".join([f"{description}: {done}/{total} ({100 * done / total:.0f} %)", *shown,
                          f"{elapsed:.0f} s elapsed", *eta])

    def update(advance: int = 1, **values):
        state["done"] += advance
        state.update(values)
        now = clock()
        if not quiet() and now - state["said"] >= PLAIN_EVERY_S:
            state["said"], state["last"] = now, line(now)
            console.print(state["last"], markup=False, highlight=False)

    yield update
    if not quiet() and line(clock()) != state["last"]:  # the end, unless the last line said it
        console.print(line(clock()), markup=False, highlight=False)


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
