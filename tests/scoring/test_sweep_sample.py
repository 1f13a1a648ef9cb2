"""Studies beyond 20 units: sampled sweeps, mixtures files, size ranges and beam search (24 tiny units)."""

from __future__ import annotations

import math
import time

import pytest

from ablate.optimize.search import beam_search, candidates, exhaustive_count
from ablate.scoring.merge import gray_code_order
from ablate.scoring.mixtures import enumerate_masks, gray_rank, plan_masks, sample_masks
from ablate.store.index import Index
from ablate.workflows.steps import run_search, score_mixture

from conftest import run_cli, tiny_config, tree_digest, write_config

quiet = dict(log=lambda *a: None)


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """24 really trained tiny units (12 per domain of 512 tokens, one step each): ~15 s on 2 cores."""
    from ablate.data.corpus import fortunes_min_corpus, study_corpus
    from ablate.data.units import split_units, unit_ids
    from ablate.store.pool import Pool
    from ablate.train.loop import train_member
    from ablate.train.seed import train_seed

    root = tmp_path_factory.mktemp("wide")
    fortunes_min_corpus(root / "corpus")
    cfg = tiny_config(root, **{"units.unit_tokens": 512, "units.units_per_domain": 12, "units.eval_bytes": 2000,
                               "seed.steps": 4, "train.checkpoint_every": 50})
    pool = Pool(cfg.pool)
    split_units(cfg, pool, study_corpus(cfg), **quiet)
    train_seed(cfg, pool, **quiet)
    units = unit_ids(pool)
    assert len(units) == 24
    for u in units:
        train_member(cfg, pool, [u], **quiet)
    return cfg, pool, units, write_config(cfg, root / "wide.yaml")


def _merged(pool, eval_set=None) -> dict[tuple, dict]:
    sql = "SELECT row_id, mixture, weights, eval_set, ppl, spec FROM mixture_perplexity WHERE method = 'merged'"
    cols, rows = Index(pool).query(sql)
    return {(tuple(r[1]), tuple(round(w, 6) for w in r[2]), r[3]): dict(zip(cols, r)) for r in rows}


# -- planning without 2^n -------------------------------------------------------------------
def test_samples_are_seeded_distinct_sized_and_gray_ordered():
    a = sample_masks(64, 500, 2, 5, seed=7)
    assert a == sample_masks(64, 500, 2, 5, seed=7) and a != sample_masks(64, 500, 2, 5, seed=8)
    assert len(set(a)) == 500 and all(2 <= bin(m).count("1") <= 5 and m < 1 << 64 for m in a)
    assert [gray_rank(m) for m in a] == sorted(gray_rank(m) for m in a)
    assert sorted(sample_masks(5, 31, 1, 5, seed=0)) == list(range(1, 32))  # all of them: each once
    assert sorted(enumerate_masks(24, 1, 2), key=gray_rank) == enumerate_masks(24, 1, 2)
    assert len(plan_masks(64, max_size=2)) == 64 + 64 * 63 // 2  # a size range, however many units
    small = enumerate_masks(8, 2, 3)  # the historical order for small studies, built either way
    assert small == sorted([m for m in range(1, 256) if 2 <= bin(m).count("1") <= 3], key=gray_rank)
    assert small == [m for m in gray_code_order(8) if 2 <= bin(m).count("1") <= 3]


def test_exhaustive_count_is_the_candidate_list_length():
    for n, k, grid in ((4, 3, [1, 2]), (5, 2, [1, 3]), (6, 3, [0, 1, 2]), (3, 3, [1.0])):
        assert exhaustive_count(n, k, grid) == len(candidates([f"u{i}" for i in range(n)], k, grid))
    assert exhaustive_count(64, 3, [1.0]) == 43744 + 1  # and the uniform mixture of all 64


def test_the_all_units_mixture_is_always_a_candidate():
    """Issue 41.7: `--max-size 3` with 4 units left out the uniform mixture of all 4, the baseline `optimize`
    compares against, while the plan said exhaustive."""
    units = ["a", "b", "c", "d"]
    for size in (1, 2, 3):
        cands = candidates(units, size, [1, 2])
        assert (units, [0.25] * 4) in cands and len(cands) == exhaustive_count(4, size, [1, 2])
    assert len([c for c, _ in candidates(units, 4, [1.0]) if len(c) == 4]) == 1  # not twice when in range
    scores = beam_search(units, 2, [1.0], 1, lambda cands: {(tuple(c), tuple(w)): 1.0 for c, w in cands})
    assert (tuple(units), (0.25,) * 4) in scores


def test_beam_search_scales_to_64_units_and_finds_a_separable_optimum():
    units = [f"u{i:02d}" for i in range(64)]
    good = {"u03": 0.5, "u40": 0.7, "u17": 0.9}
    calls = []

    def score(cands):  # the mean of the units' "costs": the best mixture is the best unit alone
        calls.append(len(cands))
        return {(tuple(c), tuple(round(x, 6) for x in w)): sum(good.get(u, 2.0) * x for u, x in zip(c, w))
                for c, w in cands}

    t0 = time.perf_counter()
    scores = beam_search(units, 3, [1, 3], 4, score)
    assert time.perf_counter() - t0 < 2 and sum(calls) < 64 + 4 * 63 * 2 + 4 * 8
    best = min(scores, key=scores.get)
    assert best[0] == ("u03",)
    assert (("u03", "u40"), (0.5, 0.5)) in scores and (("u03", "u17", "u40"), (0.333333,) * 3) in scores
    assert any(len(set(w)) > 1 for _, w in scores)  # weighted variants of the best pairs/triples


# -- sweeps on 24 real units -----------------------------------------------------------------
def test_sampled_sweep_is_reproducible_matches_score_mixture_and_resumes(wide, capsys):
    cfg, pool, units, cfg_path = wide
    args = ["sweep", "--sample", "5", "--sizes", "2-4", "--seed", "1", "-c", str(cfg_path)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "5 mixtures (5 scored, 0 cached)" in out
    expected = {tuple(units[i] for i in range(24) if m >> i & 1) for m in sample_masks(24, 5, 2, 4, 1)}
    rows = _merged(pool)
    assert {mix for mix, _, _ in rows} == expected and all(2 <= len(m) <= 4 for m in expected)
    assert len(rows) == 5 * 2  # two eval sets
    code, out, err = run_cli(args, capsys)  # the same seed: the same mixtures, all cached
    assert code == 0 and "5 mixtures (0 scored, 5 cached)" in out, err
    mix = sorted(expected)[0]
    again = score_mixture(cfg, pool, list(mix), force=True)  # the one-mixture path, from scratch
    for r in (r for r in again if r["method"] == "merged"):
        swept = rows[(mix, tuple(round(1 / len(mix), 6) for _ in mix), r["eval_set"])]
        assert math.isclose(swept["ppl"], r["ppl"], rel_tol=1e-4)
    assert len(_merged(pool)) == 10  # the same row ids: score-mixture rewrote the sweep's rows


def test_mixtures_file_with_macro_groups_and_weights(wide, tmp_path, capsys):
    cfg, pool, units, cfg_path = wide
    listing = tmp_path / "mixtures.txt"
    listing.write_text("# three mixtures, one of them twice\n\n"
                       "fortunes-05 literature-05          # plain: the running sum\n"
                       "fortunes-06+literature-06 fortunes-07\n"
                       "fortunes-08 literature-08 --weights 3,1\n"
                       "literature-05 fortunes-05\n")
    code, out, err = run_cli(["sweep", "--mixtures", str(listing), "--eval", "fortunes", "-c", str(cfg_path)], capsys)
    assert code == 0, err
    assert "3 mixtures (3 scored, 0 cached)" in out
    rows = _merged(pool)
    macro = rows[(("fortunes-06", "fortunes-07", "literature-06"), (0.25, 0.5, 0.25), "fortunes")]
    weighted = rows[(("fortunes-08", "literature-08"), (0.75, 0.25), "fortunes")]
    plain = rows[(("fortunes-05", "literature-05"), (0.5, 0.5), "fortunes")]
    assert weighted["spec"] == "0.75*(fortunes-08) | 0.25*(literature-08)"
    for items, w, row in ((["fortunes-06+literature-06", "fortunes-07"], None, macro),
                          (["fortunes-08", "literature-08"], "3,1", weighted), (["fortunes-05", "literature-05"], None, plain)):
        ref = next(r for r in score_mixture(cfg, pool, items, w, ["fortunes"], force=True) if r["method"] == "merged")
        assert math.isclose(ref["ppl"], row["ppl"], rel_tol=1e-4 if row is plain else 1e-12), items
    code, out, err = run_cli(["sweep", "--mixtures", str(listing), "--eval", "fortunes", "-c", str(cfg_path)], capsys)
    assert code == 0 and "3 mixtures (0 scored, 3 cached)" in out, err


def test_search_over_24_units_beams_and_beats_the_best_single(wide):
    cfg, pool, units, _ = wide
    assert exhaustive_count(24, 3, [1, 3]) > 2000  # so the default limit switches to the beam
    out = run_search(cfg, pool, "literature", max_size=3, grid=[1, 3], top=1000, beam=2, **quiet)
    assert out["strategy"] == "beam 2" and out["candidates"] <= 24 + 2 * 23 * 2 + 1 + 2 * (2 + 6)
    assert sorted(units) in [r["mixture"] for r in out["rows"]]  # the all-units mixture, beam or not
    _, rows = Index(pool).query("SELECT mixture, ppl FROM mixture_perplexity WHERE method = 'merged' AND k = 1 "
                                "AND eval_set = 'literature'")
    assert len(rows) == 24
    assert out["rows"][0]["proxy_ppl"] <= min(p for _, p in rows)
    assert {len(r["mixture"]) for r in out["rows"]} == {1, 2, 3, 24}  # up to 3, and the all-units mixture
    assert any(len(set(r["weights"])) > 1 for r in out["rows"])


# -- bad input: one line, exit 2, nothing written -----------------------------------------------
BAD = [
    (["--mixtures", "{file}"], "fortunes-00 nosuch-00\n", "unknown unit 'nosuch-00'"),
    (["--mixtures", "{file}"], "fortunes-00 literature-00 --weights a,b\n", "numbers"),
    (["--mixtures", "{file}"], "fortunes-00 literature-00\nfortunes-00 literature-00 --weights 1,-1\n",
     ":2: weights must not be negative"),
    (["--mixtures", "{file}"], "fortunes-00 literature-00 --weights 1,2,3\n", "3 weights given for 2"),
    (["--mixtures", "{file}"], "fortunes-00 literature-00 --weights 0,0\n", "must not all be zero"),
    (["--mixtures", "{file}"], "fortunes-00 --bogus\n", "unknown option"),
    (["--mixtures", "{file}"], "# nothing\n", "lists no mixture"),
    (["--mixtures", "{missing}"], None, "no such file"),
    (["--mixtures", "{file}", "--sample", "3"], "fortunes-00\n", "drop --units"),
    (["--sample", "301", "--sizes", "1-2"], None, "more than the 300 mixtures"),
    (["--sample", "0"], None, "at least 1"),
    (["--sample", "3", "--sizes", "3-2"], None, "--sizes 3-2"),
    (["--sample", "3", "--sizes", "0-2"], None, "--sizes 0-2"),
    (["--sample", "3", "--sizes", "1-25"], None, "<= 24"),
    (["--sample", "3", "--sizes", "two"], None, "--sizes must be A-B"),
    (["--sizes", "1-2", "--max-size", "2"], None, "not both"),
    (["--seed", "3"], None, "--seed S goes with --sample"),
    ([], None, "pass --sample N"),  # full enumeration of 24 units
]


@pytest.mark.parametrize("args, text, message", BAD, ids=[b[2] for b in BAD])
def test_bad_sweep_input_is_one_line_exit_2_and_writes_nothing(wide, tmp_path, capsys, args, text, message):
    _, pool, _, cfg_path = wide
    file = tmp_path / "mixtures.txt"
    if text is not None:
        file.write_text(text)
    args = [a.format(file=file, missing=tmp_path / "missing.txt") for a in args]
    before = tree_digest(pool.root)
    code, out, err = run_cli(["sweep", *args, "-c", str(cfg_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), (args, err)
    assert message in err, err
    assert tree_digest(pool.root) == before
