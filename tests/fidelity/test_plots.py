"""The report's figures: log axes carry a few readable tick labels that never overlap."""

from __future__ import annotations

import pytest

from ablate.fidelity.plots import _plt, fidelity_figure


def _labels(ax, renderer, axis: str):
    ticks = ax.get_xticklabels(which="both") if axis == "x" else ax.get_yticklabels(which="both")
    shown = [t for t in ticks if t.get_visible() and t.get_text()]
    return [t.get_text() for t in shown], [t.get_window_extent(renderer) for t in shown]


@pytest.mark.parametrize("lo, hi", [(21.0, 38.0), (3.0, 9000.0)])  # less than a decade (minor labels), many decades
def test_log_tick_labels_are_few_and_do_not_overlap(lo, hi):
    rows = [{"eval_set": e, "k": k, "union_ppl": lo + (hi - lo) * i / 9, "merged_ppl": lo + (hi - lo) * (9 - i) / 9}
            for e in ("fiction", "bible", "quotes") for i, k in zip(range(10), [2, 3] * 5)]
    fig = fidelity_figure(rows, "unit")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for axis in ("x", "y"):
            texts, boxes = _labels(ax, renderer, axis)
            assert 2 <= len(texts) <= 4, texts
            assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), texts
            assert all("times" not in t and "^" not in t for t in texts), texts  # plain numbers
    _plt().close(fig)
