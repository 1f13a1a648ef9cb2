"""One per-token loss (ablate/scoring/losses.py): every caller's stored values keep the bits of the formula
it had before (evaluate_tokens, the batched evaluator, the optimizer's fit and held windows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ablate.models.model import load_member
from ablate.optimize.losses import set_nll, window_nll
from ablate.scoring import batched, losses
from ablate.scoring.batched import EvalWindows, ModelStack
from ablate.scoring.evaluate import batches, evaluate_tokens
from ablate.scoring.evaluate import windows as spans
from ablate.scoring.losses import token_nll, total_nll, window_sums
from ablate.study.context import load_study


@pytest.fixture
def member(study):
    """A trained unit member and a real eval stream with a ragged tail."""
    cfg, pool, units, _ = study
    st = load_study(cfg, pool)
    tokens = st.eval_tokens[st.evals[0]["domain"]]
    n = (tokens.size - 17) // cfg.eval.seq_len * cfg.eval.seq_len + 17
    return load_member(pool, st.unit_member(units[0])).eval(), tokens[:n], st.byte_len, cfg.eval


def _old_evaluate(model, tokens, seq_len, batch_size):
    """evaluate_tokens' loss before losses.py: one log-softmax over all of a batch's logits."""
    total, per_window, per_tok = torch.zeros((), dtype=torch.float64), [], []
    with torch.inference_mode():
        for batch in batches(tokens, spans(int(tokens.size), seq_len), batch_size):
            ids = torch.from_numpy(batch.astype(np.int64))
            logits, target = model(input_ids=ids).logits[:, :-1], ids[:, 1:]
            logp = F.log_softmax(logits.float().reshape(-1, logits.size(-1)), -1)
            total += F.nll_loss(logp, target.reshape(-1), reduction="sum").double()
            tok = -logp.gather(1, target.reshape(-1, 1)).view(target.shape)
            per_window.append(tok.double().sum(1))
            per_tok.append(tok.reshape(-1))
    return float(total), torch.cat(per_window).numpy(), torch.cat(per_tok).numpy()


@pytest.mark.parametrize("chunk", [None, 512 * 7])  # one chunk; 7 tokens a chunk (the tiny vocab is 512)
def test_evaluate_tokens_keeps_the_old_bits(member, monkeypatch, chunk):
    model, tokens, byte_len, ev = member
    if chunk:
        monkeypatch.setattr(losses, "CHUNK_LOGITS", chunk)
    got = evaluate_tokens(model, tokens, byte_len, seq_len=ev.seq_len, batch_size=ev.batch_size, per_token=True)
    total, per_window, per_tok = _old_evaluate(model, tokens, ev.seq_len, ev.batch_size)
    assert got["nll_sum"] == total
    assert got["window_nll"] == [float(x) for x in per_window]
    assert np.array_equal(got["token_nll"], per_tok)


@pytest.mark.parametrize("chunk", [None, 512 * 5])
def test_batched_and_optimizer_losses_keep_the_old_bits(member, monkeypatch, chunk):
    model, tokens, byte_len, ev = member
    if chunk:
        monkeypatch.setattr(losses, "CHUNK_LOGITS", chunk)
    win = EvalWindows.build(tokens, byte_len, ev.seq_len)
    with torch.no_grad():
        logits = model(input_ids=win.full).logits[:, :-1].float()
    target = win.full[:, 1:]
    # the batched evaluator's and the held windows' old formula: cross_entropy per token, float32 window sums
    old_tok = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), reduction="none")
    old_windows = old_tok.view(target.shape).sum(1).double().numpy()
    assert np.array_equal(window_nll(model, win.full, ev.batch_size), old_windows)
    full = EvalWindows(win.name, win.full, None, win.n_pred[:len(win.full)], win.n_bytes[:len(win.full)])
    stack = ModelStack(model, 1)
    stack.load_state(0, model.state_dict())
    stack.fused = False  # the model's own logits (_plain)
    assert np.array_equal(stack.window_nll(full, ev.batch_size)[0], old_windows)
    stack.fused = True  # the chunked head: its GEMM blocks differ from the model's, so against its old formula
    got = stack.window_nll(full, ev.batch_size)[0]
    monkeypatch.setattr(batched, "token_nll", lambda x, t: F.cross_entropy(x.float(), t, reduction="none"))
    monkeypatch.setattr(batched, "window_sums", lambda x, wide: x.sum(2))
    assert np.array_equal(got, stack.window_nll(full, ev.batch_size)[0])


def test_the_fit_loss_and_its_gradient_keep_the_old_bits(member, monkeypatch):
    model, tokens, byte_len, ev = member
    monkeypatch.setattr(losses, "CHUNK_LOGITS", 512 * 9)
    ids = EvalWindows.build(tokens, byte_len, ev.seq_len).full[:6]
    model.zero_grad(set_to_none=True)
    total, n_pred = set_nll(model, ids, 4, grad=True)
    new_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    old_total = 0.0
    for i in range(0, ids.size(0), 4):  # set_nll's old formula: cross_entropy(..., "sum") per batch
        logits = model(input_ids=ids[i:i + 4]).logits[:, :-1]
        nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), ids[i:i + 4, 1:].reshape(-1),
                              reduction="sum")
        (nll / n_pred).backward()
        old_total += float(nll.detach())
    assert total == old_total
    for n, p in model.named_parameters():
        assert torch.equal(new_grads[n], p.grad), n
    model.zero_grad(set_to_none=True)


def test_mask_and_chunks_on_real_logits(member):
    model, tokens, byte_len, ev = member
    ids = torch.from_numpy(tokens[:3 * ev.seq_len].astype(np.int64)).view(3, -1)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1]
    target = ids[:, 1:]
    whole = token_nll(logits, target, chunk_logits=10 ** 9)
    for chunk in (1, 512 * 3, 512 * 100):
        assert torch.equal(token_nll(logits, target, chunk_logits=chunk), whole)
    assert total_nll(whole) == F.cross_entropy(logits.reshape(-1, 512), target.reshape(-1), reduction="sum")
    mask = torch.rand(target.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    masked = token_nll(logits, target, mask=mask)
    assert torch.equal(masked[mask], whole[mask]) and not masked[~mask].any()
    assert torch.allclose(window_sums(masked), (whole.double() * mask).sum(1))
    assert window_sums(whole).dtype == window_sums(whole, wide=False).dtype == torch.float64
