"""ablate/workflows/fidelity_runs.py: the unions the fidelity protocol trains."""

from __future__ import annotations

from ablate.workflows.fidelity_runs import truth_mixtures


def test_truth_mixtures_sample_every_size():
    units = [f"u{i}" for i in range(6)]
    assert len(truth_mixtures(units, "all", 0)) == 57
    sample = truth_mixtures(units, 12, 0)
    assert {len(m) for m in sample} == {2, 3, 4, 5, 6}
    assert sample == truth_mixtures(units, 12, 0) and len({tuple(m) for m in sample}) == len(sample)
