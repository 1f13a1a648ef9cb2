import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ablate.core.weights import is_uniform, parse_weights, wkey
from ablate.models.model import load_member, load_state, model_from_config, seed_config
from ablate.scoring.evaluate import evaluate_tokens, windows
from ablate.scoring.merge import RunningSum, gray_code_order, merge_members
from ablate.store.index import Index
from ablate.study.context import load_study
from ablate.workflows.steps import run_sweep, score_mixture

from conftest import run_cli, tree_digest, write_config


def _members(pool, units):
    by_unit = {m["units"][0]: m["model_id"] for m in pool.iter_metas("unit")}
    return [by_unit[u] for u in units]


def test_merge_invariants(study):
    cfg, pool, units, _ = study
    a, b, c = _members(pool, units[:3])
    wa = load_file(str(pool.weights_path(a)))
    alone = merge_members(pool, [a])
    assert all(torch.equal(alone[k], wa[k]) for k in wa)  # one member = that member, exactly
    twice = merge_members(pool, [a, a])
    assert all(torch.equal(twice[k], wa[k]) for k in wa)  # identical members average to themselves
    first = merge_members(pool, [a, b], [1, 0])
    assert all(torch.equal(first[k], wa[k]) for k in wa)  # weights (1, 0) return the first
    ab, ba = merge_members(pool, [a, b]), merge_members(pool, [b, a])
    assert all(torch.allclose(ab[k], ba[k], rtol=0, atol=1e-7) for k in ab)
    ref = {k: sum(load_file(str(pool.weights_path(m)))[k].double() for m in (a, b, c)) / 3 for k in wa}
    abc = merge_members(pool, [a, b, c])
    for k in wa:
        rel = (abc[k].double() - ref[k]).abs().max() / ref[k].abs().max()
        assert rel < 1e-6, k


@pytest.mark.parametrize("raw, msg", [("1,-1", "negative"), ("nan,1", "finite"), ("0,0", "zero"),
                                      ("1", "2 units"), ("a,b", "numbers")])
def test_bad_weights_refused(raw, msg):
    with pytest.raises(Exception, match=msg):
        parse_weights(raw, 2)


def test_uniform_is_equal_weight_keys():
    """One tolerance for "uniform" everywhere: the 6 decimals weights are matched by (wkey)."""
    assert is_uniform([]) and is_uniform([1.0]) and is_uniform([1 / 3] * 3) and is_uniform(parse_weights("1,1,1", 3))
    assert not is_uniform(parse_weights("3,1", 2)) and not is_uniform([0.333333, 0.333334, 0.333333])
    assert is_uniform([0.5 + 1e-9, 0.5 - 1e-9]) and wkey([0.5 + 1e-9]) == wkey([0.5 - 1e-9])


def test_gray_code_visits_every_subset_one_change_at_a_time():
    order = gray_code_order(4)
    assert sorted(order) == list(range(1, 16))
    assert all(bin(x ^ y).count("1") == 1 for x, y in zip(order, order[1:]))


def test_running_sum_matches_merging_from_scratch(study):
    _, pool, units, _ = study
    members = _members(pool, units)
    running = RunningSum(pool, members)
    for mask in gray_code_order(len(members)):
        chosen = [members[i] for i in range(len(members)) if mask >> i & 1]
        running.move_to(set(chosen))
        inc, scratch = running.average(), merge_members(pool, chosen)
        for k in scratch:
            assert torch.allclose(inc[k], scratch[k], rtol=1e-5, atol=1e-6), (chosen, k)


def test_perplexity_matches_plain_transformers(study):
    cfg, pool, units, _ = study
    study_ = load_study(cfg, pool, ["fortunes"])
    model = load_member(pool, _members(pool, units[:1])[0])
    tokens = study_.eval_tokens["fortunes"]
    ours = evaluate_tokens(model, tokens, study_.byte_len, seq_len=cfg.eval.seq_len, batch_size=7)
    nll, n = 0.0, 0
    with torch.no_grad():
        for a, b in windows(tokens.size, cfg.eval.seq_len):
            ids = torch.from_numpy(tokens[a:b].astype(np.int64))[None]
            nll += model(input_ids=ids, labels=ids).loss.item() * (b - a - 1)
            n += b - a - 1
    assert ours["n_tokens"] == n
    assert math.isclose(ours["ppl"], math.exp(nll / n), rel_tol=1e-4)
    assert math.isclose(ours["bits_per_byte"], ours["nll_sum"] / math.log(2) / ours["n_bytes"])


def test_score_mixture_writes_merged_union_and_seed_rows_and_caches(study_copy):
    cfg, pool, units, union = study_copy
    rows = score_mixture(cfg, pool, ["literature-00", "fortunes-00"])
    methods = {(r["method"], r["eval_set"]) for r in rows}
    assert methods == {(m, e) for m in ("merged", "union", "seed") for e in ("fortunes", "literature")}
    n_files = len(list(pool.results_dir.glob("*.jsonl")))
    again = score_mixture(cfg, pool, ["fortunes-00", "literature-00"])
    assert len(list(pool.results_dir.glob("*.jsonl"))) == n_files  # read from the table
    assert sorted(map(repr, again)) == sorted(map(repr, rows))


def test_sweep_equals_scoring_each_mixture_from_scratch(study_copy):
    cfg, pool, units, _ = study_copy
    out = run_sweep(cfg, pool, units, jobs=2, log=lambda *a: None)
    assert out["mixtures"] == 15 and out["scored"] == 15
    _, rows = Index(pool).query("SELECT mixture, eval_set, ppl FROM mixture_perplexity WHERE method='merged'")
    swept = {(tuple(m), e): p for m, e, p in rows}
    assert len(swept) == 30
    study_ = load_study(cfg, pool)
    model = model_from_config(seed_config(pool, study_.seed["model_id"]))
    for mix in (("fortunes-00", "literature-01"), ("fortunes-00", "fortunes-01", "literature-00", "literature-01")):
        load_state(model, merge_members(pool, _members(pool, list(mix))), "test")
        for ev in ("fortunes", "literature"):
            ppl = evaluate_tokens(model, study_.eval_tokens[ev], study_.byte_len, seq_len=cfg.eval.seq_len,
                                  batch_size=cfg.eval.batch_size)["ppl"]
            assert math.isclose(swept[(mix, ev)], ppl, rel_tol=1e-4)
    again = run_sweep(cfg, pool, units, log=lambda *a: None)
    assert again["scored"] == 0 and again["cached"] == 15


def test_sql_views_and_read_only(study_copy, capsys):
    cfg, pool, units, _ = study_copy
    run_sweep(cfg, pool, units, max_size=2, log=lambda *a: None)
    cfg_path = write_config(cfg, pool.root.parent / "c.yaml")
    code, out, err = run_cli(["sql", "SELECT * FROM proxy_fidelity", "--format", "json", "-c", str(cfg_path)], capsys)
    assert code == 0, err
    fid = json.loads(out)
    assert {"eval_set", "n_mixtures", "pearson_log_ppl", "spearman_log_ppl", "top1_agree", "regret"} <= set(fid[0])
    for view in ("mixture_vs_union", "ablation_cost"):
        code, out, err = run_cli(["sql", f"SELECT * FROM {view}", "--format", "csv", "-c", str(cfg_path)], capsys)
        assert code == 0 and out.count("\n") >= 2, err
    before = tree_digest(pool.root)
    for bad in ("DELETE FROM models", "DROP VIEW proxy_fidelity", "ATTACH 'x.db'", "INSTALL httpfs",
                "COPY models TO 'x.csv'", "SELECT 1; DELETE FROM models",
                "SELECT * FROM read_csv('/etc/passwd')"):
        code, out, err = run_cli(["sql", bad, "-c", str(cfg_path)], capsys)
        assert code == 2 and err.count("\n") == 1, (bad, err)
    assert tree_digest(pool.root) == before
    # results survive a reindex
    n = Index(pool).query("SELECT count(*) FROM mixture_perplexity")[1][0][0]
    pool.index_path.unlink()
    assert Index(pool).rebuild()["mixture_perplexity"] == n


def test_export_mixture_loads_with_from_pretrained(study, tmp_path, capsys):
    cfg, pool, units, _ = study
    out = tmp_path / "merged"
    code, _, err = run_cli(["export-mixture", "fortunes-00", "literature-00", "--out", str(out),
                            "-c", str(write_config(cfg, tmp_path / "c.yaml"))], capsys)
    assert code == 0, err
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(out))
    ref = merge_members(pool, _members(pool, ["fortunes-00", "literature-00"]))
    state = model.state_dict()
    assert all(torch.equal(state[k], ref[k]) for k in ref)


def test_the_sweep_bar_says_mixtures_per_minute(study_copy, monkeypatch):
    """The sweep's rate reads "N mixtures/min", not the cryptic "mix_min=N"."""
    import io
    import re

    from rich.console import Console

    import ablate.core.progress as progress

    cfg, pool, units, _ = study_copy
    screen = io.StringIO()
    monkeypatch.setenv("ABLATE_QUIET", "0")
    monkeypatch.setattr(progress, "console", Console(file=screen, width=100, force_terminal=True, color_system=None))
    run_sweep(cfg, pool, units[:2], max_size=1, eval_names=["fortunes"], log=lambda *a: None)
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen.getvalue())
    assert re.search(r"\d+\.\d mixtures/min", text) and "mix_min" not in text, text
