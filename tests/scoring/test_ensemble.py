"""The `ensemble` proxy: the token-loss cache (hash, invalidation, corruption) and exact mixing and gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ablate.core.errors import AblateError
from ablate.scoring import ensemble
from ablate.store import token_nll
from ablate.store.index import Index
from ablate.study.context import load_study


def _rows(pool, method):
    cols, rows = Index(pool).query("SELECT mixture, eval_set, nll_sum, n_tokens, n_bytes, ppl FROM mixture_perplexity "
                                   "WHERE method = ?", [method])
    return {(tuple(r[0]), r[1]): dict(zip(cols, r)) for r in rows}


@pytest.fixture
def scored(study_copy):
    """The study with the merged rows of the units alone and the ensemble of every subset of three units."""
    from ablate.scoring import proxies
    from ablate.scoring.score import score_built_models

    cfg, pool, units, _ = study_copy
    study = load_study(cfg, pool)
    singles = [([u], [1.0]) for u in units[:3]]
    score_built_models(study, singles, "merged", proxies.get("merged").build)
    every = [(list(c), [1.0 / k] * k) for k in (1, 2, 3) for c in itertools.combinations(units[:3], k)]
    ensemble.score_ensemble(study, every)
    return cfg, pool, units, study


def test_a_member_alone_is_its_own_row_and_the_cache_holds_its_losses(scored):
    cfg, pool, units, study = scored
    merged, ens = _rows(pool, "merged"), _rows(pool, "ensemble")
    for key, row in merged.items():
        assert ens[key]["n_tokens"] == row["n_tokens"] and ens[key]["n_bytes"] == row["n_bytes"]
        assert ens[key]["nll_sum"] == pytest.approx(row["nll_sum"], rel=1e-6)  # float32 cache, float64 sums
    for u in units[:3]:
        mid = study.unit_member(u)
        assert sorted(p.name for p in (pool.cache_dir / "token_nll" / mid).iterdir()) == \
            sorted(f"{ev['domain']}.{ext}" for ev in study.evals for ext in ("json", "npy"))


def test_the_mixture_is_never_worse_than_its_members_on_average(scored):
    """Jensen: -log Σ w p_i ≤ Σ w (-log p_i), token by token, so the row is at most the members' mean NLL."""
    cfg, pool, units, study = scored
    ens = _rows(pool, "ensemble")
    for (mix, ev), row in ens.items():
        if len(mix) > 1:
            mean = np.mean([ens[((u,), ev)]["nll_sum"] for u in mix])
            assert row["nll_sum"] <= mean + 1e-6


def test_a_retrained_member_misses_its_cache(scored):
    cfg, pool, units, study = scored
    mid, ev = study.unit_member(units[0]), study.evals[0]
    sha = pool.read_meta(mid)["sha256"]
    key = token_nll.cache_key(sha, ev, cfg.eval.seq_len, study.precision)
    assert token_nll.read(pool, mid, ev["domain"], key) is not None
    other = token_nll.cache_key("0" * 64, ev, cfg.eval.seq_len, study.precision)  # other weights, same id
    assert token_nll.read(pool, mid, ev["domain"], other) is None
    assert token_nll.cache_key(sha, ev, cfg.eval.seq_len + 1, study.precision) != key


def test_a_corrupted_cache_file_is_refused_with_one_line(scored):
    cfg, pool, units, study = scored
    mid, ev = study.unit_member(units[1]), study.evals[0]
    npy = pool.cache_dir / "token_nll" / mid / f"{ev['domain']}.npy"
    blob = bytearray(npy.read_bytes())
    blob[-3] ^= 0xFF  # one flipped byte in the numbers
    npy.write_bytes(bytes(blob))
    before = _rows(pool, "ensemble")
    with pytest.raises(AblateError) as err:
        ensemble.score_ensemble(load_study(cfg, pool), [([units[1], units[2]], [0.3, 0.7])])
    assert "sha256" in str(err.value) and "\n" not in str(err.value) and str(npy.parent) in str(err.value)
    assert _rows(pool, "ensemble") == before  # nothing written


def test_weighted_rows_and_every_subset_at_once_agree_with_the_exact_mix(scored):
    cfg, pool, units, study = scored
    ev = study.evals[0]["domain"]
    members = [study.unit_member(u) for u in units[:3]]
    nll = np.stack([ensemble.member_nll(study, m)[0][ev] for m in members])
    masks = ensemble.all_masks(3)
    fast = ensemble.subset_nll_sums(nll, masks)
    exact = [ensemble.mixed_nll(nll[mk.astype(bool)], np.full(int(mk.sum()), 1 / mk.sum())).sum() for mk in masks]
    np.testing.assert_allclose(fast, exact, rtol=1e-5)
    ens = _rows(pool, "ensemble")
    for mk, value in zip(masks, exact):
        mix = tuple(u for u, b in zip(units[:3], mk) if b)
        assert ens[(mix, ev)]["nll_sum"] == pytest.approx(value, rel=1e-7)


def test_identical_members_mix_to_themselves_and_weights_matter():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 9, 200), rng.uniform(0.1, 9, 200)
    np.testing.assert_allclose(ensemble.mixed_nll(np.stack([a, a, a]), [0.2, 0.3, 0.5]), a, rtol=1e-12)
    assert ensemble.mixed_nll(np.stack([a, b]), [0.9, 0.1]).sum() != ensemble.mixed_nll(np.stack([a, b]), [0.1, 0.9]).sum()
    # far-apart losses (p ~ e^-700) must not underflow to inf
    assert np.isfinite(ensemble.mixed_nll(np.stack([a + 700, a + 740]), [0.5, 0.5])).all()


def test_the_weight_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    nll = rng.uniform(0.5, 12, (4, 300))
    w = np.array([0.1, 0.2, 0.3, 0.4])
    grad = ensemble.weight_gradient(nll, w)
    eps = 1e-6
    for i in range(4):
        step = eps * np.eye(4)[i]
        fd = (ensemble.mixed_nll(nll, w + step).sum() - ensemble.mixed_nll(nll, w - step).sum()) / (2 * eps)
        assert grad[i] == pytest.approx(fd, rel=1e-6)


def test_search_by_ensemble_scores_the_mixture_not_the_merge(study_copy, tmp_path, capsys):
    """`search --method ensemble` writes ensemble rows from the cache (never a merged model under its name)."""
    from conftest import run_cli, write_config

    cfg, pool, units, _ = study_copy
    path = write_config(cfg, tmp_path / "study.yaml")
    code, out, err = run_cli(["search", "--target", "literature", "--method", "ensemble", "-c", str(path)], capsys)
    assert code == 0, err
    ens, merged = _rows(pool, "ensemble"), _rows(pool, "merged")
    pairs = [k for k in ens if len(k[0]) > 1 and k in merged]
    assert pairs and all(ens[k]["nll_sum"] != merged[k]["nll_sum"] for k in pairs)
    study = load_study(cfg, pool, ["literature"])
    mix = next(k[0] for k in ens if len(k[0]) == 2)
    nll = np.stack([ensemble.member_nll(study, study.unit_member(u))[0]["literature"] for u in mix])
    assert ens[(mix, "literature")]["nll_sum"] == pytest.approx(ensemble.mixed_nll(nll, [0.5, 0.5]).sum(), rel=1e-9)
    code, _, err = run_cli(["search", "--target", "literature", "--method", "ensemble", "--screen", "-c", str(path)],
                           capsys)
    assert code == 2 and "needs none" in err and "Traceback" not in err
