"""Ground truths: `train-mixture --budget sum|unit`, `--tokens N`, `--weights`.

A union's budget ("sum": k x one unit's tokens; "unit": one unit's tokens; "tokens=N")
and its weights decide how many sequences each unit gives. These tests check the draws
(counts, which rows, repeats over epochs), the member ids (same request -> same member,
any change -> another one, old ids unchanged), resume after SIGKILL, the index tables
and views, and the bad-input contract of the CLI.
"""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ablate.core.config import config_hash
from ablate.data.units import unit_meta
from ablate.store.index import Index
from ablate.study.budgets import parse_budget
from ablate.study.context import member_recipe
from ablate.train.loop import train_member, unit_sequences
from ablate.train.truths import draw_sequences

from conftest import copy_study, run_cli, tree_digest, write_config

sys.path.insert(0, str(Path(__file__).parents[1] / "store"))  # tests/store: run alone, this file still finds it
from test_crash import crash_and_recover  # noqa: E402

quiet = dict(log=lambda *a: None)
PAIR = ["fortunes-00", "literature-00"]  # sorted: weights below are in this order unless said otherwise
TOKENS = 8100  # not a whole number of sequences (64 tokens): the budget rounds down to 126 sequences


@pytest.fixture(scope="module")
def truths(study, tmp_path_factory):
    """A copy of the study with three more unions of PAIR: unit budget 3:1, unit budget uniform,
    TOKENS tokens 1:3 (the last one repeats literature-00 over 1.5 epochs)."""
    cfg, _, _, union = study
    cfg, pool = copy_study(cfg, tmp_path_factory.mktemp("truths") / "copy")
    return SimpleNamespace(
        cfg=cfg, pool=pool, union=union,
        weighted=train_member(cfg, pool, PAIR, budget="unit", weights="3,1", **quiet),
        equal=train_member(cfg, pool, PAIR, budget="unit", **quiet),
        fixed=train_member(cfg, pool, PAIR, tokens=TOKENS, weights="1,3", **quiet))


def _seqs_per_unit(t, unit):
    return unit_meta(t.pool, unit)["n_tokens"] // t.cfg.train.seq_len


# -- 1. weighted draws ----------------------------------------------------------------
def test_weighted_draws_follow_weights_and_budget(truths):
    t = truths
    seq_len, batch = t.cfg.train.seq_len, t.cfg.train.batch_size
    one_unit = _seqs_per_unit(t, "fortunes-00")
    assert one_unit == _seqs_per_unit(t, "literature-00") == 64  # equal units: "one unit's tokens" is unambiguous
    cases = [(t.weighted, "unit", one_unit, {"fortunes-00": 0.75, "literature-00": 0.25}),
             (t.fixed, "tokens=8064", TOKENS // seq_len, {"fortunes-00": 0.25, "literature-00": 0.75})]
    for meta, label, budget_seqs, share in cases:
        assert not meta.get("reused") and meta["kind"] == "union" and meta["units"] == PAIR
        assert meta["budget"] == label
        assert meta["weights"] == pytest.approx([share[u] for u in PAIR])
        draw = meta["draw"]
        assert set(draw) == set(PAIR)
        assert sum(d["sequences"] for d in draw.values()) == budget_seqs
        for u, d in draw.items():
            assert abs(d["sequences"] - share[u] * budget_seqs) < 1, (label, u, d)
            assert d["available"] == _seqs_per_unit(t, u)
            assert d["repeated"] == (d["sequences"] > d["available"])
            assert d["epochs"] == pytest.approx(d["sequences"] / d["available"], abs=1e-6)
        # the budget, rounded down to whole sequences, is what was trained on
        assert meta["train_tokens"] == meta["budget_tokens"] == budget_seqs * seq_len
        assert meta["steps"] == math.ceil(budget_seqs / batch)
    assert t.weighted["draw"]["fortunes-00"]["sequences"] == 48
    assert t.weighted["train_tokens"] == unit_meta(t.pool, "fortunes-00")["n_tokens"]
    assert t.fixed["train_tokens"] == 8064 < TOKENS
    lit = t.fixed["draw"]["literature-00"]  # 94 or 95 of 64: more than the unit holds
    assert lit["repeated"] and lit["epochs"] > 1 and lit["sequences"] in (94, 95)
    assert not t.fixed["draw"]["fortunes-00"]["repeated"] and not any(d["repeated"] for d in t.weighted["draw"].values())


def _owners(parts):
    """{row bytes: unit index}; the units share no sequence, so a drawn row's unit is unambiguous."""
    owner = {}
    for i, part in enumerate(parts):
        for row in part:
            assert owner.setdefault(row.tobytes(), i) == i, "a sequence occurs in two units"
    return owner


@pytest.mark.parametrize("which, budget, tokens, weights",
                         [("weighted", "unit", None, "3,1"), ("fixed", None, TOKENS, "1,3")])
def test_drawn_rows_come_from_the_right_unit_without_repeats_within_an_epoch(truths, which, budget, tokens, weights):
    t = truths
    recipe = member_recipe(t.cfg)
    parts, _ = unit_sequences(t.pool, PAIR, recipe.seq_len)
    owner = _owners(parts)
    plan = parse_budget(budget, tokens, weights, PAIR, recipe)
    seqs, draw = draw_sequences(parts, PAIR, plan, recipe.data_seed)
    assert draw == getattr(t, which)["draw"]  # the very draw the trained member recorded
    assert seqs.shape == (sum(d["sequences"] for d in draw.values()), recipe.seq_len)
    drawn = [Counter() for _ in parts]
    for row in seqs:
        key = row.tobytes()
        assert key in owner, "a drawn row is in neither unit"
        drawn[owner[key]][key] += 1
    for i, (u, part) in enumerate(zip(PAIR, parts)):
        need, avail = draw[u]["sequences"], len(part)
        assert sum(drawn[i].values()) == need
        # whole epochs first: every row is drawn need//avail or need//avail + 1 times, so no
        # row comes twice before every row of the unit came once
        full, extra = divmod(need, avail)
        multiplicity = Counter(drawn[i][r.tobytes()] for r in part)
        assert multiplicity == Counter({m: n for m, n in {full + 1: extra, full: avail - extra}.items() if n})
    # deterministic: the same seed draws the same rows; another seed picks another subset
    again, _ = draw_sequences(parts, PAIR, plan, recipe.data_seed)
    assert np.array_equal(again, seqs)
    other, _ = draw_sequences(parts, PAIR, plan, recipe.data_seed + 1)
    assert Counter(map(bytes, other)) != Counter(map(bytes, seqs))


# -- 2. determinism and reuse -----------------------------------------------------------
def test_same_request_same_member_any_change_another(truths):
    t = truths
    cfg, pool = t.cfg, t.pool
    for again in (train_member(cfg, pool, PAIR, budget="unit", weights="3,1", **quiet),
                  # units in another order, weights permuted with them (and scaled): the same union
                  train_member(cfg, pool, PAIR[::-1], budget="unit", weights="1,3", **quiet),
                  train_member(cfg, pool, PAIR[::-1], budget="unit", weights=[2.0, 6.0], **quiet)):
        assert again.get("reused") and again["model_id"] == t.weighted["model_id"]
    # weights follow the order the units were given in: 3,1 on the reversed list is another union
    flipped = parse_budget("unit", None, "3,1", PAIR[::-1], member_recipe(cfg))
    assert flipped.weights == pytest.approx((0.25, 0.75))
    assert train_member(cfg, pool, PAIR, tokens=TOKENS, weights="1,3", **quiet)["model_id"] == t.fixed["model_id"]
    # budgets are whole sequences: 8127 and 8100 tokens train on the same 126 sequences, one member
    assert train_member(cfg, pool, PAIR, tokens=8127, weights="1,3", **quiet)["model_id"] == t.fixed["model_id"]

    sum_weighted = train_member(cfg, pool, PAIR, budget="sum", weights="3,1", **quiet)
    fewer_tokens = train_member(cfg, pool, PAIR, tokens=4096, weights="1,3", **quiet)
    assert not sum_weighted.get("reused") and not fewer_tokens.get("reused")
    assert sum_weighted["budget_tokens"] == 2 * t.weighted["budget_tokens"]  # k x one unit
    assert sum_weighted["draw"]["fortunes-00"]["sequences"] == 96 and sum_weighted["draw"]["fortunes-00"]["repeated"]
    ids = [t.union["model_id"], t.equal["model_id"], t.weighted["model_id"], t.fixed["model_id"],
           sum_weighted["model_id"], fewer_tokens["model_id"]]
    assert len(set(ids)) == len(ids), ids  # sum vs unit, uniform vs 3:1, 8100 vs 4096 tokens
    assert len({m["model_id"] for m in pool.iter_metas("union")}) >= len(ids)


def test_default_budget_keeps_the_old_member_id(truths):
    t = truths
    cfg, pool = t.cfg, t.pool
    for same in (train_member(cfg, pool, PAIR, **quiet), train_member(cfg, pool, PAIR, budget="sum", **quiet),
                 train_member(cfg, pool, PAIR[::-1], weights="1,1", **quiet)):
        assert same.get("reused") and same["model_id"] == t.union["model_id"]
    # the id members had before budgets existed (pools made then must still find their unions)
    seed = next(pool.iter_metas("seed"))
    key = config_hash({"seed": seed["model_id"], "data": sorted(unit_meta(pool, u)["data_sha256"] for u in PAIR),
                       "recipe": {k: v for k, v in asdict(member_recipe(cfg)).items()
                                  if k not in ("optimizer", "compile", "start")},
                       "replicate": 0})  # the recipe's fields then (the defaults of train.optimizer, compile, start add none)
    assert t.union["model_id"] == f"union-k2-{key[:10]}"


def test_one_unit_at_the_budget_of_one_unit_is_the_units_member(truths):
    t = truths
    own = next(m for m in t.pool.iter_metas("unit") if m["units"] == ["fortunes-00"])
    for meta in (train_member(t.cfg, t.pool, ["fortunes-00"], budget="unit", **quiet),
                 train_member(t.cfg, t.pool, ["fortunes-00"], budget="unit", weights="5", **quiet)):
        assert meta.get("reused") and meta["model_id"] == own["model_id"] and meta["kind"] == "unit"


# -- 3. resume after SIGKILL -------------------------------------------------------------
def test_weighted_fixed_budget_union_survives_sigkill(truths, study_copy, tmp_path):
    """Killed after step 5 (checkpoints every 3 steps), rerun: resumes from the step-3
    checkpoint and ends bit-identical to the uninterrupted run in the other copy."""
    cfg, pool, _, _ = study_copy
    assert cfg.train.checkpoint_every == 3
    ref = truths.weighted
    assert not pool.has_member(ref["model_id"])
    cfg_path = write_config(cfg, tmp_path / "c.yaml")
    crash_and_recover(cfg_path, pool, ["train-mixture", *PAIR, "--budget", "unit", "--weights", "3,1"], "train.step:5")
    got = pool.read_meta(ref["model_id"])
    assert got["resumed_from_step"] == 3
    assert got["sha256"] == ref["sha256"]
    assert got["draw"] == ref["draw"] and got["budget_tokens"] == ref["budget_tokens"]


# -- 4. tables and views ------------------------------------------------------------------
def _rows(pool, sql):
    cols, rows = Index(pool).query(sql)
    return [dict(zip(cols, r)) for r in rows]


def test_tables_and_views_tell_the_ground_truths_apart(truths):
    from ablate.workflows.steps import score_mixture

    t = truths
    models = {r["model_id"]: r for r in _rows(t.pool, "SELECT model_id, budget, budget_tokens, weights, draw "
                                                     "FROM models WHERE kind = 'union'")}
    one = unit_meta(t.pool, "fortunes-00")["n_tokens"]
    expect = {t.union["model_id"]: ("sum", 2 * one, [0.5, 0.5]), t.equal["model_id"]: ("unit", one, [0.5, 0.5]),
              t.weighted["model_id"]: ("unit", one, [0.75, 0.25]),
              t.fixed["model_id"]: ("tokens=8064", 8064, [0.25, 0.75])}
    for mid, (budget, tokens, weights) in expect.items():
        row = models[mid]
        assert (row["budget"], row["budget_tokens"]) == (budget, tokens), mid
        assert row["weights"] == pytest.approx(weights), mid
    assert json.loads(models[t.fixed["model_id"]]["draw"])["literature-00"]["repeated"] is True
    assert json.loads(models[t.weighted["model_id"]]["draw"])["fortunes-00"]["sequences"] == 48

    for weights in (None, "3,1", "1,3"):
        score_mixture(t.cfg, t.pool, PAIR, weights)
    union_rows = _rows(t.pool, "SELECT model_id, budget, eval_set, ppl FROM mixture_perplexity WHERE method = 'union'")
    budget_of = {r["model_id"]: r["budget"] for r in union_rows}
    for mid, (budget, _, _) in expect.items():
        assert budget_of[mid] == budget, mid
    ppl = {(r["model_id"], r["eval_set"]): r["ppl"] for r in union_rows}
    evals = {r["eval_set"] for r in union_rows}

    view = [r for r in _rows(t.pool, "SELECT mixture, weights, eval_set, proxy, budget, question, union_ppl "
                                     "FROM mixture_vs_union WHERE proxy = 'merged'") if r["mixture"] == PAIR]
    per_key = Counter((tuple(round(w, 6) for w in r["weights"]), r["eval_set"], r["budget"]) for r in view)
    assert set(per_key.values()) == {1}, per_key  # one row per (proxy row, budget)

    def truth_rows(weights):
        return {(r["eval_set"], r["budget"]): r for r in view
                if [round(w, 6) for w in r["weights"]] == weights}

    uniform = truth_rows([0.5, 0.5])
    assert {b for _, b in uniform} == {"sum", "unit"} and {e for e, _ in uniform} == evals
    for ev in evals:  # each budget meets its own union, never the 3:1 union of the same budget
        assert uniform[ev, "sum"]["union_ppl"] == ppl[t.union["model_id"], ev]
        assert uniform[ev, "unit"]["union_ppl"] == ppl[t.equal["model_id"], ev]
        assert truth_rows([0.75, 0.25])[ev, "unit"]["union_ppl"] == ppl[t.weighted["model_id"], ev]
        assert truth_rows([0.25, 0.75])[ev, "tokens=8064"]["union_ppl"] == ppl[t.fixed["model_id"], ev]
    questions = {b: r["question"] for (_, b), r in {**uniform, **truth_rows([0.25, 0.75])}.items()}
    assert "equal compute" in questions["unit"]
    assert "add data" in questions["sum"] or "longer" in questions["sum"]
    assert "8064" in questions["tokens=8064"]
    assert len(set(questions.values())) == len(questions)


# -- 5. bad input through the CLI -------------------------------------------------------------
BAD = {
    "weights: count does not match the units": ["--weights", "3,1,1"],
    "weights: all zero": ["--weights", "0,0"],
    "weights: one zero (a unit with no share)": ["--budget", "unit", "--weights", "1,0"],
    "weights: a share that rounds to no sequence": ["--budget", "unit", "--weights", "1,0.001"],
    "weights: negative": ["--weights", "1,-2"],
    "weights: NaN": ["--weights", "1,nan"],
    "weights: not numbers": ["--weights", "three,one"],
    "tokens: less than one batch": ["--tokens", "500"],
    "tokens: not an integer (float)": ["--tokens", "1.5e4"],
    "tokens: not an integer (text)": ["--tokens", "abc"],
    "budget: unknown": ["--budget", "bogus"],
    "budget: together with --tokens": ["--budget", "unit", "--tokens", "8192"],
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_budget_input(name, truths, tmp_path, capsys):
    t = truths
    args = ["train-mixture", *PAIR, *BAD[name], "-c", str(write_config(t.cfg, tmp_path / "c.yaml"))]
    before = tree_digest(t.pool.root)
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 2, (stdout, stderr)
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert tree_digest(t.pool.root) == before
