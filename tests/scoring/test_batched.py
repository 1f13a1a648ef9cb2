"""Many merged models per pass (ablate/scoring/batched.py) equal one-model-at-a-time evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ablate.models.model import model_from_config, seed_config
from ablate.scoring.batched import EvalWindows, ModelStack, window_stats
from ablate.scoring.evaluate import evaluate_tokens
from ablate.scoring.merge import RunningSum, gray_code_order
from ablate.store.index import Index
from ablate.study.context import load_study
from ablate.workflows.steps import run_sweep, score_mixture

quiet = dict(log=lambda *a: None)


def _ragged(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """The eval stream cut to whole windows plus a 17-token tail: the last window is ragged."""
    n = (tokens.size - 17) // seq_len * seq_len + 17
    return tokens[:n]


@pytest.mark.parametrize("slots", [1, 2, 7])
def test_batched_sums_and_weights_equal_single_model_evaluation(study, slots):
    cfg, pool, units, _ = study
    st = load_study(cfg, pool)
    members = [st.unit_member(u) for u in units]
    seq = cfg.eval.seq_len
    tokens = _ragged(st.eval_tokens[st.evals[0]["domain"]], seq)
    windows = EvalWindows.build(tokens, st.byte_len, seq)
    assert windows.tail is not None and windows.tail.size(1) == 17
    single = model_from_config(seed_config(pool, st.seed["model_id"]))
    stack = ModelStack(model_from_config(seed_config(pool, st.seed["model_id"])), slots)
    running, ref = RunningSum(pool, members), RunningSum(pool, members)
    masks = gray_code_order(len(members))[:slots]
    for slot, mask in enumerate(masks):
        chosen = {members[i] for i in range(len(members)) if mask >> i & 1}
        running.move_to(chosen)
        stack.load(slot, running)
    nll = stack.window_nll(windows, cfg.eval.batch_size)
    assert nll.shape == (slots, len(windows)) and stack.fused
    params = dict(single.named_parameters())
    for slot, mask in enumerate(masks):
        ref.move_to({members[i] for i in range(len(members)) if mask >> i & 1})
        ref.load_into(single)
        for name, p in params.items():  # the very floats a single model gets
            assert torch.equal(stack.views[stack.owner[name]][slot], p), name
        want = evaluate_tokens(single, tokens, st.byte_len, seq_len=seq, batch_size=cfg.eval.batch_size)
        got = window_stats(windows, nll[slot], 0.0)
        assert got["n_tokens"] == want["n_tokens"] and got["n_bytes"] == want["n_bytes"]
        assert got["nll_sum"] == pytest.approx(want["nll_sum"], rel=1e-6)


def _tiny(arch: str):
    from transformers import Gemma2Config, Gemma2ForCausalLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if arch == "gpt2":  # a head with its own (untied) weight layout and learned positions
        return GPT2LMHeadModel(GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                          bos_token_id=0, eos_token_id=0)).eval()
    # logits soft-capped after the head: head(body(x)) is not the model's output, the probe must see it
    return Gemma2ForCausalLM(Gemma2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                          final_logit_softcapping=2.0, pad_token_id=0, bos_token_id=0,
                                          eos_token_id=0)).eval()


@pytest.mark.parametrize("arch,fused", [("gpt2", True), ("gemma2-softcap", False)])
def test_other_architectures_and_the_full_logits_fallback(arch, fused):
    models = [_tiny(arch) for _ in range(3)]
    for i, m in enumerate(models):  # three different models
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.01 * i)
    tokens = np.random.RandomState(1).randint(0, 300, 64 * 5 + 9).astype(np.uint16)
    byte_len = np.full(300, 2, dtype=np.int64)
    stack = ModelStack(_tiny(arch), 3)
    for i, m in enumerate(models):
        stack.load_state(i, m.state_dict())
    nll = stack.window_nll(EvalWindows.build(tokens, byte_len, 64), batch_size=2)
    assert stack.fused is fused
    for i, m in enumerate(models):
        want = evaluate_tokens(m, tokens, byte_len, seq_len=64, batch_size=2)
        assert nll[i].sum() == pytest.approx(want["nll_sum"], rel=1e-6)


def test_sweep_rows_match_score_mixture(study_copy):
    """The sweep's batched rows and score-mixture's one-model rows agree to 1e-6 (slots forced to 3)."""
    cfg, pool, units, _ = study_copy
    cfg.eval.models_per_pass = 3
    run_sweep(cfg, pool, units[:3], jobs=1, **quiet)
    _, rows = Index(pool).query("SELECT mixture, eval_set, nll_sum, n_tokens FROM mixture_perplexity "
                                "WHERE method = 'merged'")
    swept = {(tuple(m), e): (s, n) for m, e, s, n in rows}
    assert len(swept) == 7 * len(load_study(cfg, pool).evals)
    pick = units[:2]
    for r in score_mixture(cfg, pool, pick, force=True):
        if r["method"] == "merged":
            s, n = swept[(tuple(sorted(pick)), r["eval_set"])]
            assert n == r["n_tokens"]
    _, fresh = Index(pool).query("SELECT eval_set, nll_sum FROM mixture_perplexity WHERE method = 'merged' "
                                 "AND mixture = ?", [sorted(pick)])
    for e, s in fresh:  # score-mixture --force re-measured with evaluate_tokens
        assert s == pytest.approx(swept[(tuple(sorted(pick)), e)][0], rel=1e-6)
