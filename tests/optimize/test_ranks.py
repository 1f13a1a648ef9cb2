"""Rankings with their uncertainty: units alone ranked with their member as the truth, validation that measures the
unions the pool has, the paired bootstrap of each candidate's gap to #1, and the warnings beside a ranking."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ablate.optimize import ranks
from ablate.optimize.objectives import parse_objective
from ablate.scoring.uncertainty import bootstrap_values, gap_intervals, point_values, unigram_ppl, untrained_seed
from ablate.store.index import Index
from ablate.train.loop import train_member

from conftest import run_cli, write_config


def _rows(pool, sql, params=None):
    cols, rows = Index(pool).query(sql, params)
    return [dict(zip(cols, r)) for r in rows]


def _gaps(nll: np.ndarray, n_pred: np.ndarray, seed: int = 0) -> list[dict]:
    one = {"s": nll}
    value = (lambda lp: lp["s"])
    point = point_values(one, {"s": n_pred}, value)
    return gap_intervals(point, bootstrap_values(one, {"s": n_pred}, value, 500, seed), best=0)


def test_the_bootstrap_is_paired_seeded_and_separates_only_real_gaps():
    rng = np.random.default_rng(1)
    base = rng.gamma(5.0, 60.0, size=80)  # per-window NLL sums of uneven windows: the pairing must cancel them
    n_pred = np.full(80, 63)
    nll = np.stack([base, base.copy(), base * 1.02, base + rng.normal(0, 1e-3, 80)])
    gaps = _gaps(nll, n_pred)
    assert gaps == _gaps(nll, n_pred)  # the same seed, the same table
    assert gaps[1] == {"gap": 0.0, "gap_low": 0.0, "gap_high": 0.0, "tied_top": True}  # an identical copy
    assert gaps[2]["gap_low"] > 0 and not gaps[2]["tied_top"]  # 2 % worse on every window: resolved
    assert gaps[2]["gap_low"] <= gaps[2]["gap"] <= gaps[2]["gap_high"]
    assert gaps[3]["tied_top"]  # noise of a thousandth of a nat per window: not
    assert _gaps(nll, n_pred, seed=2)[2] != gaps[2]  # the seed is what makes it repeatable, not a constant


def test_untrained_seed_warning_threshold():
    assert "nearly untrained" in untrained_seed(400.0, 512, "quotes")  # 78 % of the vocabulary
    assert untrained_seed(40.0, 512, "quotes") is None
    assert "token frequencies" in untrained_seed(2000.0, 49152, "quotes", unigram=1600.0)  # a large vocabulary
    assert untrained_seed(900.0, 49152, "quotes", unigram=1600.0) is None
    tokens = np.repeat(np.arange(4), 25)  # four tokens, equally frequent: the unigram perplexity is 4
    assert unigram_ppl(tokens) == pytest.approx(4.0)


def test_search_ranks_units_alone_and_validate_measures_existing_unions(study_copy, tmp_path, capsys, monkeypatch):
    """A unit alone is ranked among the truths (its member), the pool's trained union is measured on the target
    without training, and every shown row carries its gap to #1; a pool whose rows predate per-window losses
    gets them measured again."""
    cfg, pool, _, union = study_copy
    train_member(cfg, pool, union["units"], replicate=1, log=lambda *a: None)  # another data order: the noise floor
    trained = []
    monkeypatch.setattr("ablate.workflows.steps.train_member", lambda cfg, pool, mix, **kw: trained.append(mix))
    path = str(write_config(cfg, tmp_path / "c.yaml"))
    code, out, err = run_cli(["search", "--target", "fortunes", "--truth", "sum", "--method", "merged",
                              "--validate", "1", "--max-size", "2", "--top", "11", "-c", path], capsys)
    assert code == 0, err
    assert len(trained) == 1 and len(trained[0]) == 2  # the top pair; units alone are never trained
    rows = _rows(pool, "SELECT * FROM searches ORDER BY rank")
    assert len(rows) == 11  # 4 units alone + 6 pairs + the uniform mixture of all 4
    singles = [r for r in rows if len(r["mixture"]) == 1]
    assert len(singles) == 4
    for r in singles:  # the truth of one unit is its member, which its merged row measures
        assert r["union_ppl"] == pytest.approx(r["proxy_ppl"]) and r["union_rank"] is not None
    known = {tuple(r["mixture"]): r for r in rows}[tuple(union["units"])]
    assert known["union_ppl"] is not None  # trained before, never scored on fortunes: measured by the validate
    assert rows[0]["n_unions_known"] == 5
    assert sorted(r["union_rank"] for r in rows if r["union_rank"]) == [1, 2, 3, 4, 5]
    assert rows[0]["gap"] == 0 and rows[0]["tied_top"] and rows[0]["bootstrap"] == cfg.eval.bootstrap
    for r in rows:
        assert r["gap_low"] <= r["gap"] + 1e-12 and r["gap"] <= r["gap_high"] + 1e-12
        # the rows sum in float32 per batch (bit-identical to before), the windows in float64: 1e-7 apart
        assert r["gap"] == pytest.approx(math.log(r["proxy_ppl"] / rows[0]["proxy_ppl"]), abs=1e-5)
        assert r["tied_top"] == (r["gap_low"] <= 0)
    assert "vs_top" in out and "tied_top" in out and "indistinguishable from #1" in out
    if rows[0]["union_rank"]:  # here the top pair's training was skipped: no truth of its own
        assert "of 5 known truths" in out
    seed_ppl = _rows(pool, "SELECT ppl FROM mixture_perplexity WHERE method = 'seed' "
                           "AND eval_set = 'fortunes'")[0]["ppl"]
    assert seed_ppl >= 0.25 * 512 and "nearly untrained" in out  # the test seed: 16 steps
    reps = [r["ppl"] for r in _rows(pool, "SELECT ppl FROM mixture_perplexity WHERE method = 'union' "
                                          "AND eval_set = 'fortunes' ORDER BY replicate")]
    assert len(reps) == 2  # the validate measured the replicate too
    noise = abs(max(reps) / min(reps) - 1)
    assert all(r["noise_floor"] == pytest.approx(noise) for r in rows) and "noise floor" in out
    assert all(r["within_noise"] == (math.expm1(r["gap"]) <= noise) for r in rows)

    # an index rebuilt from results files that predate per-window losses: the shown candidates are measured again
    before = {tuple(r["mixture"]): (r["gap"], r["gap_low"]) for r in rows}
    for f in pool.results_dir.glob("*.jsonl"):
        lines = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        f.write_text("".join(json.dumps({k: v for k, v in x.items() if k != "window_nll"}) + "\n" for x in lines))
    pool.index_path.unlink()
    assert _rows(pool, "SELECT count(*) AS n FROM window_losses")[0]["n"] == 0
    keys = [(tuple(r["mixture"]), tuple(round(w, 6) for w in r["weights"])) for r in rows]
    gaps = ranks.ranking_gaps(cfg, pool, parse_objective(["fortunes"], ["fortunes", "literature"]), "merged", keys,
                              best=keys[0])
    assert len(gaps) == 11
    for k, g in gaps.items():
        assert g["gap"] == pytest.approx(before[k[0]][0], abs=1e-6)
        assert g["gap_low"] == pytest.approx(before[k[0]][1], abs=1e-6)


def test_score_mixture_and_sweep_show_gaps_and_a_ranking_within_noise_warns(study_copy, tmp_path, capsys):
    cfg, pool, _, _ = study_copy
    path = str(write_config(cfg, tmp_path / "c.yaml"))
    code, out, err = run_cli(["score-mixture", "fortunes-00", "literature-00", "--eval", "fortunes", "-c", path],
                             capsys)
    assert code == 0, err
    assert "vs_best" in out and "tied_best" in out
    code, out, err = run_cli(["sweep", "--max-size", "1", "--target", "literature", "-c", path], capsys)
    assert code == 0, err
    assert "vs_top" in out and "fortunes-00" in out and "literature-01" in out
    objective = parse_objective(["literature"], ["fortunes", "literature"])
    tied = {("a",): {"gap": 0.0, "gap_low": 0.0, "gap_high": 0.0, "tied_top": True},
            ("b",): {"gap": 0.001, "gap_low": -0.002, "gap_high": 0.004, "tied_top": True}}
    assert any("indistinguishable from #1" in n for n in ranks.ranking_notes(cfg, pool, objective, tied, None))
    apart = {**tied, ("b",): {"gap": 0.001, "gap_low": 0.0005, "gap_high": 0.002, "tied_top": False}}
    assert not any("indistinguishable" in n for n in ranks.ranking_notes(cfg, pool, objective, apart, None))
    assert any("retraining noise" in n for n in ranks.ranking_notes(cfg, pool, objective, apart, 0.01))


def test_an_additive_search_measures_the_seed_it_starts_from(study_copy, tmp_path, capsys):
    """`search --truth sum` defaults to own-additive, which starts from the seed's perplexity on the target: on a
    pool where the seed was never measured there, the search measures it (was: internal error, exit 1)."""
    cfg, pool, _, _ = study_copy
    assert not _rows(pool, "SELECT * FROM mixture_perplexity WHERE method = 'seed' AND eval_set = 'fortunes'")
    code, out, err = run_cli(["search", "--target", "fortunes", "--truth", "sum", "--max-size", "2",
                              "-c", str(write_config(cfg, tmp_path / "c.yaml"))], capsys)
    assert code == 0, err
    assert _rows(pool, "SELECT * FROM mixture_perplexity WHERE method = 'seed' AND eval_set = 'fortunes'")
    assert _rows(pool, "SELECT count(*) AS n FROM searches")[0]["n"] == 10


def test_a_seed_known_target_gets_its_note_and_the_advice_to_validate(tmp_path):
    """search and optimize say when a target is one the seed knows and no unit covers: the protocol's figures
    there, and train the top 3."""
    from ablate.optimize.ranks import SEED_KNOWN_AGREEMENT, kind_notes

    from conftest import tiny_config

    cfg = tiny_config(tmp_path)  # seed on riddles, units on fortunes and literature
    notes = kind_notes(cfg, None, ["riddles", "fortunes"])
    assert len(notes) == 1 and notes[0].startswith("note: riddles is a target the seed already knows")
    assert SEED_KNOWN_AGREEMENT in notes[0] and "--validate 3" in notes[0] and "--method unit-shifts" in notes[0]
    told = tiny_config(tmp_path, **{"seed.knows": []})
    assert kind_notes(told, None, ["riddles"]) == []
