import multiprocessing as mp
import os
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from ablate.core.errors import Interrupted
from ablate.data.units import eval_sets, load_eval_tokens, load_tokenizer, study_tokenizer, token_byte_lengths
from ablate.models.model import load_member
from ablate.scoring.evaluate import evaluate_tokens
from ablate.store.index import Index
from ablate.store.pool import Pool
from ablate.train.loop import mixture_sequences, train_member

quiet = dict(log=lambda *a: None)


def _ppl(pool, cfg, model_id, domain):
    ev = eval_sets(pool, [domain])[0]
    tok_dir, _ = study_tokenizer(pool)
    return evaluate_tokens(load_member(pool, model_id), load_eval_tokens(pool, ev),
                           token_byte_lengths(load_tokenizer(tok_dir)), seq_len=cfg.eval.seq_len,
                           batch_size=cfg.eval.batch_size)["ppl"]


def test_seed_loss_goes_down(study):
    _, pool, _, _ = study
    seed = next(pool.iter_metas("seed"))
    curve = seed["loss_curve"]
    assert np.mean(curve[-3:]) < np.mean(curve[:3]) - 0.5
    assert seed["n_params"] > 0 and seed["flops"] == 6.0 * seed["n_params_nonembed"] * seed["train_tokens"]


def test_unit_member_beats_seed_on_its_own_domain(study):
    cfg, pool, _, _ = study
    seed = next(pool.iter_metas("seed"))
    member = [m for m in pool.iter_metas("unit") if m["units"] == ["fortunes-00"]][0]
    assert _ppl(pool, cfg, member["model_id"], "fortunes") < _ppl(pool, cfg, seed["model_id"], "fortunes")
    # and it round-trips through a normal HF load of the seed dir + member weights
    from transformers import AutoModelForCausalLM
    hf = AutoModelForCausalLM.from_pretrained(str(pool.seed_dir(seed["model_id"])))
    assert sum(p.numel() for p in hf.parameters()) == seed["n_params"]


def test_every_run_has_a_price_tag(study):
    _, pool, _, union = study
    for meta in pool.iter_metas():
        for key in ("wall_s", "cpu_s", "energy_kwh", "co2_kg", "energy_method", "energy_assumptions", "flops",
                    "flops_convention", "device", "versions", "train_tokens", "steps", "sha256"):
            assert key in meta, key
        assert meta["energy_kwh"] > 0 and meta["co2_kg"] > 0
        assert meta["energy_method"].startswith("estimate")
    assert union["steps"] == 2 * next(m for m in pool.iter_metas("unit"))["steps"]


def test_union_data_is_the_multiset_of_its_units(study):
    cfg, pool, _, _ = study
    one, _ = mixture_sequences(pool, ["fortunes-00"], cfg.train.seq_len)
    unit_tokens = np.load(pool.units_dir / "fortunes-00.npy")
    assert Counter(one.ravel().tolist()) == Counter(unit_tokens[: one.size].tolist())
    two, _ = mixture_sequences(pool, ["fortunes-00", "literature-00"], cfg.train.seq_len)
    lit, _ = mixture_sequences(pool, ["literature-00"], cfg.train.seq_len)
    assert Counter(two.ravel().tolist()) == Counter(one.ravel().tolist()) + Counter(lit.ravel().tolist())


def test_same_command_twice_trains_once(study, capsys):
    cfg, pool, _, _ = study
    before = len(list(pool.iter_metas()))
    meta = train_member(cfg, pool, ["fortunes-00"], **quiet)
    assert meta.get("reused") and len(list(pool.iter_metas())) == before
    # order of units does not change a union's identity
    again = train_member(cfg, pool, ["literature-00", "fortunes-00"], **quiet)
    assert again.get("reused")


@pytest.mark.parametrize("stop_at", [1, 4, 7])
def test_resume_after_interruption_gives_identical_weights(study_copy, stop_at):
    cfg, pool, _, _ = study_copy
    cfg.train.checkpoint_every = 100  # the interruption itself checkpoints
    full = train_member(cfg, pool, ["fortunes-01"], force=True, **quiet)
    reference = (pool.weights_path(full["model_id"])).read_bytes()
    shutil.rmtree(pool.member_dir(full["model_id"]))
    with pytest.raises(Interrupted):
        train_member(cfg, pool, ["fortunes-01"], stop_after=stop_at, **quiet)
    assert not pool.has_member(full["model_id"])
    assert (pool.work_dir(full["model_id"]) / "ckpt.pt").exists()
    resumed = train_member(cfg, pool, ["fortunes-01"], **quiet)
    assert resumed["resumed_from_step"] == stop_at
    assert pool.weights_path(full["model_id"]).read_bytes() == reference
    assert not pool.work_dir(full["model_id"]).exists()


def test_interrupted_run_leaves_no_visible_member(study_copy):
    cfg, pool, _, _ = study_copy
    before = {m["model_id"] for m in pool.iter_metas()}
    with pytest.raises(Interrupted):
        train_member(cfg, pool, ["fortunes-01", "literature-01"], stop_after=2, **quiet)
    assert {m["model_id"] for m in pool.iter_metas()} == before
    assert not [p for p in pool.models_dir.iterdir() if p.name.startswith(".staging")]


def test_reindex_restores_every_row(study_copy):
    _, pool, _, _ = study_copy
    index = Index(pool)
    tables = ("units", "models")
    before = {t: sorted(map(repr, index.query(f"SELECT * FROM {t} ORDER BY 1")[1])) for t in tables}
    pool.index_path.unlink()
    index.rebuild()
    after = {t: sorted(map(repr, index.query(f"SELECT * FROM {t} ORDER BY 1")[1])) for t in tables}
    assert before == after and len(before["models"]) == 6


def _train_in_process(cfg_json, unit):
    from ablate.core.config import StudyConfig

    os.environ["ABLATE_QUIET"] = "1"
    cfg = StudyConfig.model_validate(cfg_json)
    train_member(cfg, Pool(cfg.pool), [unit], force=True, log=lambda *a: None)


def test_two_processes_train_at_once(study_copy):
    cfg, pool, _, _ = study_copy
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_train_in_process, args=(cfg.model_dump(mode="json"), u))
             for u in ("fortunes-01", "literature-01")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    _, rows = Index(pool).query("SELECT units[1] FROM models WHERE kind = 'unit'")
    assert sorted(r[0] for r in rows) == ["fortunes-00", "fortunes-01", "literature-00", "literature-01"]


def test_import_of_a_local_hf_directory_round_trips(study, tmp_path):
    """Any local HF causal LM can be the seed: weights and tokenizer come back unchanged."""
    from transformers import AutoModelForCausalLM

    from ablate.data.corpus import study_corpus
    from ablate.data.units import split_units
    from ablate.train.seed import import_seed

    cfg, pool, _, _ = study
    seed = next(pool.iter_metas("seed"))
    external = tmp_path / "external-model"
    source = load_member(pool, seed["model_id"])
    source.save_pretrained(str(external))
    load_tokenizer(pool.seed_dir(seed["model_id"])).save_pretrained(str(external))
    imported_cfg = cfg.model_copy(deep=True)
    imported_cfg.pool = str(tmp_path / "pool2")
    imported_cfg.seed.import_path = str(external)
    imported_cfg.seed.mode = "import"
    new_pool = Pool(imported_cfg.pool)
    meta = import_seed(imported_cfg, new_pool)
    assert meta["kind"] == "seed" and import_seed(imported_cfg, new_pool).get("reused")
    back = load_member(new_pool, meta["model_id"])
    ref = AutoModelForCausalLM.from_pretrained(str(external)).state_dict()
    assert all(torch.equal(back.state_dict()[k], ref[k]) for k in ref)
    split = split_units(imported_cfg, new_pool, study_corpus(imported_cfg), log=lambda *a: None)
    assert split["tokenizer_id"] == meta["tokenizer_id"]
    member = train_member(imported_cfg, new_pool, ["fortunes-00"], log=lambda *a: None)
    assert member["seed_id"] == meta["model_id"]
