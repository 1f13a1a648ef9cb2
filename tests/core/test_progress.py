"""Progress bars at 80 columns keep their numbers whole: the description and the bar give way."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

import ablate.core.progress as progress


@pytest.mark.parametrize("description, fields", [
    ("train union of 2 (budget unit) on a long description", {"loss": "3.1234", "tok_s": "12,345"}),
    ("sweep", {"mixtures_per_min": "123.4"}),
])
def test_a_bar_at_80_columns_shows_count_fields_and_times_whole(description, fields, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("ABLATE_QUIET", "0")
    screen = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=screen, force_terminal=True, color_system=None))
    with progress.bar(description, 1000, 0, fields) as update:
        update(100, **fields)
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen.getvalue())
    line = [ln for ln in re.split(r"[\r\n]", text) if ln.strip()][-1]
    assert len(line) <= 80, line
    numbers = line[line.index("100/1000"):]  # everything from the count on is intact, nothing cut with "…"
    assert "…" not in numbers, line
    assert " ".join(f"{k}={v}" for k, v in fields.items()) in numbers, line
    assert re.search(r"\d:\d\d:\d\d ETA (-:--:--|\d:\d\d:\d\d)$", numbers.rstrip()), line
    assert line.startswith(description[:5]), line  # the description is cut from its end, if at all


@pytest.mark.parametrize("total, completed, reused, says", [
    (0, 0, "15 mixtures' rows reused from the pool", "search: nothing to do, 15 mixtures' rows reused from the pool"),
    (0, 0, None, "search: nothing to do, no work left"),
    (15, 15, None, "search: nothing to do, all 15 reused from earlier runs"),
])
def test_nothing_to_do_is_one_line_never_a_0_of_0_bar(total, completed, reused, says, monkeypatch):
    monkeypatch.setenv("ABLATE_QUIET", "0")
    screen = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=screen, force_terminal=True, color_system=None, width=200))
    with progress.bar("search", total, completed, {"rate": "-"}, reused=reused) as update:
        update(1, rate="1")  # callers' loops over nothing may still call it
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen.getvalue())
    assert [ln for ln in text.splitlines() if ln.strip()] == [says]
    assert "0/0" not in text and "ETA" not in text
