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


def test_off_a_terminal_a_plain_line_every_ten_seconds_and_one_at_the_end(monkeypatch):
    monkeypatch.setenv("ABLATE_QUIET", "0")
    screen = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=screen, force_terminal=False, width=200))
    now = [1000.0]
    monkeypatch.setattr(progress, "clock", lambda: now[0])
    with progress.bar("sweep", 15, 0, {"rate": "-"}, labels={"rate": "{} mixtures/min"}) as update:
        for _ in range(15):  # a mixture every 22 s: a line at most every 10 s, at the update that passes it
            now[0] += 22.0
            update(1, rate="2.7")
            if _ == 4:
                assert screen.getvalue().splitlines()[-1] == \
                    "sweep: 5/15 (33 %), 2.7 mixtures/min, 110 s elapsed, ETA 220 s"
    lines = screen.getvalue().splitlines()
    assert len(lines) == 15 and "\x1b" not in screen.getvalue()  # one per update here; the last is the end
    assert lines[-1] == "sweep: 15/15 (100 %), 2.7 mixtures/min, 330 s elapsed"
    screen.truncate(0)
    screen.seek(0)
    with progress.bar("train", 100) as update:  # fast steps: silent until 10 s have passed
        for _ in range(30):
            now[0] += 1.0
            update(1)
    assert screen.getvalue().splitlines() == ["train: 10/100 (10 %), 10 s elapsed, ETA 90 s",
                                              "train: 20/100 (20 %), 20 s elapsed, ETA 80 s",
                                              "train: 30/100 (30 %), 30 s elapsed, ETA 70 s"]
    screen.truncate(0)
    screen.seek(0)
    with progress.bar("eval", 4) as update:  # ends between two lines: the end is said once
        now[0] += 12.0
        update(3)
        now[0] += 1.0
        update(1)
    assert screen.getvalue().splitlines() == ["eval: 3/4 (75 %), 12 s elapsed, ETA 4 s", "eval: 4/4 (100 %), 13 s elapsed"]
