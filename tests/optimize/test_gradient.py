"""Gradients through the merge, the simplex with caps, and the objectives (no pool needed for most).

The gradient check builds tiny random models of three architectures (tied and untied heads, learned and
rotary positions), writes three perturbed copies as member files, and compares MemberSpace's slopes
dL/dw_i = <grad L, theta_i> with central finite differences of the loss along directions inside the
simplex (e_i - e_j), at a non-uniform point of the simplex, with the members in memory and mapped.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ablate.core.errors import UsageError
from ablate.models.model import unique_state
from ablate.optimize.losses import set_nll
from ablate.optimize.objectives import GUARD_PENALTY, parse_objective
from ablate.optimize.simplex import mirror_step, project, repetition_caps, sparsify
from ablate.scoring.inplace import MemberSpace


def _model(arch: str):
    import transformers as tf

    ids = dict(vocab_size=97, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    config = {
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, **ids),
        "gpt_neox": lambda: tf.GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=64, max_position_embeddings=64,
                                             tie_word_embeddings=False, **ids),
        "llama": lambda: tf.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                                        tie_word_embeddings=True, **ids),
    }[arch]()
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _members(model, tmp_path, n=3):
    """n member files: the model's weights plus a seeded perturbation each (float tensors only)."""
    base = unique_state(model)
    gen = torch.Generator().manual_seed(1)
    paths = []
    for i in range(n):
        state = {k: (v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v)
                 for k, v in base.items()}
        save_file(state, str(tmp_path / f"m{i}.safetensors"))
        paths.append(tmp_path / f"m{i}.safetensors")
    return paths


def _loss(space, model, windows, w):
    space.load(w)
    nll, n = set_nll(model, windows, 4, grad=False)
    return nll / n


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
@pytest.mark.parametrize("in_memory", [True, False])
def test_gradient_equals_finite_differences(arch, in_memory, tmp_path):
    model = _model(arch)
    space = MemberSpace(_members(model, tmp_path), model, keep_in_memory=in_memory)
    windows = torch.randint(1, 97, (6, 24), generator=torch.Generator().manual_seed(2))
    w = np.array([0.5, 0.3, 0.2])
    space.load(w)
    model.zero_grad(set_to_none=True)
    set_nll(model, windows, 4, grad=True)
    slopes = space.project()
    eps = 1e-2
    for i, j in [(0, 1), (1, 2), (0, 2)]:
        d = np.zeros(3)
        d[i], d[j] = 1.0, -1.0
        fd = (_loss(space, model, windows, w + eps * d) - _loss(space, model, windows, w - eps * d)) / (2 * eps)
        assert slopes[i] - slopes[j] == pytest.approx(fd, rel=0.03, abs=2e-4), (arch, i, j)


def test_a_single_member_loads_exactly_and_the_average_is_linear(tmp_path):
    model = _model("llama")
    paths = _members(model, tmp_path)
    space = MemberSpace(paths, model, keep_in_memory=True)
    from safetensors.torch import load_file

    space.load([0.0, 1.0, 0.0])
    second = load_file(str(paths[1]))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in second.items())


def test_capped_simplex_projection_and_steps():
    caps = repetition_caps([100, 100, 100], budget_tokens=200, max_epochs=1)  # 0.5 each
    assert caps.tolist() == [0.5, 0.5, 0.5]
    w = project(np.array([0.9, 0.05, 0.05]), caps)
    assert w.sum() == pytest.approx(1) and w.max() <= 0.5 + 1e-12 and w[0] == pytest.approx(0.5)
    for _ in range(50):  # pushing hard toward unit 0 never breaks the cap
        w = mirror_step(w, np.array([-1.0, 0.0, 0.0]), 0.5, caps)
        assert w.max() <= 0.5 + 1e-12 and w.sum() == pytest.approx(1) and w.min() >= 0
    with pytest.raises(UsageError, match="max-epochs"):
        repetition_caps([100, 100], budget_tokens=1000, max_epochs=2)
    with pytest.raises(UsageError, match="max-epochs must be > 0"):
        repetition_caps([100, 100], budget_tokens=100, max_epochs=0)
    s = sparsify(np.array([0.6, 0.39, 0.01]), 0.02, None)
    assert s[2] == 0 and s.sum() == pytest.approx(1) and s[0] / s[1] == pytest.approx(0.6 / 0.39)
    s = sparsify(np.array([0.5, 0.49, 0.01]), 0.02, caps)  # dropping unit 2 would break the 0.5 caps: kept
    assert s.sum() == pytest.approx(1) and s.max() <= 0.5 + 1e-12


def test_objectives_parse_value_and_refuse():
    known = ["a", "b", "c"]
    mean = parse_objective(["a,b", "c"], known, target_weights="2,1,1")
    assert mean.targets == ("a", "b", "c") and mean.describe() == "mean(a,b,c; w=2:1:1)"
    assert mean.value({"a": 1.0, "b": 2.0, "c": 3.0}) == pytest.approx((2 + 2 + 3) / 4)
    worst = parse_objective(["a,b"], known, kind="worst")
    v, slopes = worst.value_and_slopes({"a": 1.0, "b": 2.5}, {"a": 0.9, "b": 2.0})
    assert v == pytest.approx(0.5) and slopes == {"a": 0.0, "b": 1.0}
    guarded = parse_objective(["a"], known, max_loss=["b:5"])
    ok = {"a": 1.0, "b": 2.0 + math.log(1.05) - 1e-6}
    assert guarded.value(ok, {"a": 1.2, "b": 2.0}) == pytest.approx(1.0)
    bad = {"a": 1.0, "b": 2.0 + math.log(1.05) + 0.01}
    assert guarded.value(bad, {"a": 1.2, "b": 2.0}) == pytest.approx(1.0 + GUARD_PENALTY * 0.01)
    assert not guarded.guards_held(bad, {"a": 1.2, "b": 2.0})
    for args, kwargs, message in [
        (["a", "a"], {}, "named twice"), (["zz"], {}, "unknown eval set 'zz'"), ([], {}, "at least one"),
        (["a,b"], {"target_weights": "1"}, "2 non-negative numbers"),
        (["a,b"], {"target_weights": "x,y"}, "target-weights"),
        (["a"], {"max_loss": ["nope:5"]}, "unknown eval set 'nope'"),
        (["a"], {"max_loss": [":5"]}, "EVAL_SET:PERCENT"), (["a"], {"max_loss": ["a:5"]}, "is a target"),
        (["a"], {"max_loss": ["b:-1"]}, ">= 0"), (["a"], {"kind": "best"}, "--objective"),
    ]:
        with pytest.raises(UsageError, match=message):
            parse_objective(args, known, **kwargs)
