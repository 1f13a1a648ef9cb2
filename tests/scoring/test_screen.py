"""Screened sweeps and searches (ablate/scoring/screen.py): the race, its rows, and bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ablate.scoring.screen import drops, prefixes, race
from ablate.store.index import Index
from ablate.workflows.steps import run_search, run_sweep

from conftest import run_cli, tree_digest, write_config

quiet = dict(log=lambda *a: None)


def _table(means: list[float], n_windows: int = 256, noise: float = 1.0, seed: int = 0) -> np.ndarray:
    """Per-window NLL of candidates: window difficulty shared by all (what pairing removes) + own noise."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(100.0, 20.0, n_windows)
    return np.array([difficulty + m + rng.normal(0.0, noise, n_windows) for m in means])


def _race(table: np.ndarray, **kw):
    calls = []

    def evaluate(idx, start, stop):
        calls.append((list(idx), start, stop))
        return table[idx, start:stop]

    kw = {"first": 4, "growth": 4, "confidence": 0.95, "keep": 1, **kw}
    return race(table.shape[0], table.shape[1], evaluate, **kw), calls


def test_clear_leader_is_never_dropped_and_the_clearly_worse_are():
    table = _table([0.0] + [2.0] * 30)  # the leader is 2 nats per window better than 30 others
    result, calls = _race(table)
    assert result.finalists == [0]
    assert (result.dropped_in[1:] <= 2).all()  # all dropped by 64 windows of 256, most by 16
    assert (result.dropped_in[1:] <= 1).mean() > 0.9
    assert calls[0] == (list(range(31)), 0, 4) and calls[-1] == ([0], 64, 256)  # only new windows evaluated
    assert result.reached[0] == 256 and (result.reached[1:] <= 64).all()
    np.testing.assert_array_equal(result.nll[0], table[0])


def test_two_candidates_within_noise_both_reach_the_end():
    for seed in range(5):
        table = _table([0.0, 0.0, 3.0, 3.0], seed=seed)  # a tie at the top, two clearly worse
        result, _ = _race(table)
        assert set(result.finalists) == {0, 1}, seed


def test_keep_protects_the_top_k_and_a_long_prefix_is_one_full_round():
    table = _table([0.0, 0.5, 1.0, 5.0, 5.0, 5.0])
    result, _ = _race(table, keep=3)
    assert {0, 1, 2} <= set(result.finalists) and not {3, 4, 5} & set(result.finalists)
    result, calls = _race(table, first=10_000)
    assert calls == [(list(range(6)), 0, 256)] and result.finalists == list(range(6))
    assert prefixes(256, 4, 4) == [4, 16, 64, 256] and prefixes(10, 50, 4) == [10]


def test_drops_needs_two_windows_and_a_significant_gap():
    assert drops(np.array([5.0]), 0.95) == (False, 5.0)
    assert drops(np.array([1.0, 1.0, 1.0]), 0.95)[0]  # no spread, all worse
    assert not drops(np.array([1.0, -1.0, 1.2, -0.9]), 0.95)[0]


def test_finite_population_correction_shrinks_the_interval_as_the_set_is_used_up():
    gaps = np.array([1.0, -0.5] * 4)  # mean 0.25, a wide spread
    assert not drops(gaps, 0.95)[0] and not drops(gaps, 0.95, population=1000)[0]
    assert drops(gaps, 0.95, population=9)[0]  # 8 of 9 windows seen: little is left to chance


def test_a_lucky_noisy_candidate_does_not_get_a_true_top_k_dropped():
    """keep = 2; truly X < Y < Z. Z is lucky and noisy on the first windows, so it ranks first there,
    and Y is clearly worse than X. Dropping Y needs it to be significantly worse than Z too, which it is
    not: Y reaches the end and the top 2 are right (the rule before compared Y with X alone)."""
    n, rng = 256, np.random.default_rng(0)
    difficulty = rng.normal(100.0, 20.0, n)
    swing = np.where(np.arange(n) % 2 == 0, 3.0, -3.0)
    z = np.where(np.arange(n) < 16, -0.6, 0.9) + swing  # mean -0.6 on the first round, 0.81 overall
    table = np.array([difficulty + rng.normal(0.0, 0.1, n), difficulty + 0.5 + rng.normal(0.0, 0.1, n),
                      difficulty + z])
    result, _ = _race(table, first=16, keep=2)
    assert 1 in result.finalists
    assert sorted(result.finalists, key=lambda c: table[c].sum())[:2] == [0, 1]


def test_shuffled_windows_are_a_fixed_permutation_with_the_tail_last():
    from ablate.scoring.batched import EvalWindows

    tokens = np.arange(1000) % 97
    w = EvalWindows.build(tokens, np.ones(97, dtype=np.int64), seq_len=64)
    s, again = w.shuffled(0), w.shuffled(0)
    assert torch.equal(s.full, again.full) and not torch.equal(s.full, w.full)
    assert sorted(map(tuple, s.full.tolist())) == sorted(map(tuple, w.full.tolist()))
    assert torch.equal(s.tail, w.tail) and s.n_pred[-1] == w.n_pred[-1] < 63
    assert s.n_pred.sum() == w.n_pred.sum() and s.n_bytes.sum() == w.n_bytes.sum()


def test_screened_sweep_rows_tables_and_top3(study_copy):
    """On the tiny study: the screened sweep's full rows are the full sweep's rows for the same mixtures, its
    top 3 per eval set (finalists) equal the full sweep's, and dropped ones only land in screened_perplexity."""
    cfg, pool, units, _ = study_copy
    cfg.eval.screen_tokens = 64  # one window per round at first: the tiny eval sets are ~40 windows
    cfg.eval.screen_growth = 2
    out = run_sweep(cfg, pool, units, jobs=1, screen=True, **quiet)
    s = out["screened"]
    assert out["scored"] == 15 and s["eval_tokens"] < s["eval_tokens_unscreened"]
    idx = Index(pool)
    _, screened = idx.query("SELECT mixture, eval_set, n_tokens, screened, screen_windows, full_windows "
                            "FROM screened_perplexity")
    _, full = idx.query("SELECT mixture, eval_set, n_tokens, ppl FROM mixture_perplexity WHERE method = 'merged'")
    assert len(screened) == out["dropped"] and len(screened) + len(full) == 15 * len({r[1] for r in full})
    n_full = {e: n for _, e, n, _ in full}
    assert all(flag and w < fw and n < n_full[e] for _, e, n, flag, w, fw in screened)
    assert not {(tuple(m), e) for m, e, *_ in screened} & {(tuple(m), e) for m, e, *_ in full}
    _, view = idx.query("SELECT count(*) FROM mixture_vs_union")  # views read full rows only
    _, cost = idx.query("SELECT sum(dropped), sum(dropped_tokens), sum(dropped_kwh) FROM screening_cost")
    assert cost[0][0] == len(screened) and cost[0][1] == sum(n for _, _, n, *_ in screened) and cost[0][2] > 0
    screened_top = {e: sorted((p, tuple(m)) for m, ee, _, p in full if ee == e)[:3] for e in n_full}
    run_sweep(cfg, pool, units, jobs=1, force=True, **quiet)  # the full sweep, every mixture
    _, every = idx.query("SELECT mixture, eval_set, ppl FROM mixture_perplexity WHERE method = 'merged'")
    for e in n_full:
        top = sorted((p, tuple(m)) for m, ee, p in every if ee == e)[:3]
        assert [m for _, m in top] == [m for _, m in screened_top[e]], e
        for p, m in screened_top[e]:  # finalists were evaluated in full: the same numbers
            assert p == pytest.approx(dict((mm, pp) for pp, mm in top)[m], rel=1e-6)


def test_screened_search_marks_dropped_candidates(study_copy):
    cfg, pool, units, _ = study_copy
    cfg.eval.screen_tokens, cfg.eval.screen_keep = 64, 1
    target = Index(pool).query("SELECT unit_id FROM units WHERE kind = 'eval' ORDER BY unit_id")[1][0][0]
    target = target.removeprefix("eval-")
    out = run_search(cfg, pool, target, max_size=2, screen=True, top=20, **quiet)
    assert out["candidates"] == 11 and "screened" in out  # 4 + 6 pairs + all 4
    flags = [r["screened"] for r in out["rows"]]
    assert flags == sorted(flags)  # full evaluations rank first
    assert sum(flags) == out["dropped"]


@pytest.mark.parametrize("setting", ["eval.screen_confidence=1.5", "eval.screen_confidence=0",
                                     "eval.screen_tokens=0", "eval.screen_growth=1"])
def test_bad_screen_settings_exit_2_and_change_nothing(study_copy, tmp_path, capsys, setting):
    cfg, pool, _, _ = study_copy
    path = write_config(cfg, tmp_path / "study.yaml")
    before = tree_digest(pool.root)
    code, out, err = run_cli(["sweep", "--screen", "-c", str(path), "--set", setting], capsys)
    assert code == 2 and "Traceback" not in err and setting.split("=")[0] in err
    assert tree_digest(pool.root) == before
