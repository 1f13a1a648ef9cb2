"""Seeds of other architectures go through the whole pipeline (issue 12).

Per architecture (GPT-2, GPT-NeoX, Qwen2, OPT, Llama): a tiny random model built from
transformers' config classes is saved locally (safetensors) with a byte-level BPE
tokenizer trained here on the fortunes-min text, imported as the seed, and taken through
the real CLI: units split -> seed -> train-partition (2 units) -> train-mixture (--budget
unit) -> score-mixture -> export-mixture. The exported directory is reloaded with
AutoModelForCausalLM and the eval sets' perplexity is recomputed by hand (plain torch,
ablate/scoring/evaluate.py's windows); it must match the table's `merged` rows.

Between them the five cover tied (GPT-2, OPT, Llama) and untied (GPT-NeoX, Qwen2) LM
heads, learned (GPT-2, OPT with its offset of 2) and rotary positions, biases, LayerNorm
and RMSNorm, and a tokenizer class that adds a token (GPT-NeoX's <|padding|>).
No network: everything is local.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import bpe_tokenizer, run_cli, tiny_config, write_config

EOS = "<|endoftext|>"
UNITS = ["fortunes-00", "literature-00"]
SEQ_LEN = 64

# the tokenizer class each family ships with (None: keep PreTrainedTokenizerFast; transformers
# loads a byte-level tokenizer.json declared as LlamaTokenizer as the generic backend anyway)
TOKENIZER_CLASS = {"gpt2": "GPT2TokenizerFast", "gpt_neox": "GPTNeoXTokenizerFast",
                   "qwen2": "Qwen2TokenizerFast", "opt": "GPT2TokenizerFast", "llama": None}


def _config(arch: str, vocab: int, eos: int):
    """A tiny random config of the architecture: hidden 32-64, 2 layers, a few heads."""
    import transformers as tf

    ids = dict(vocab_size=vocab, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=48, n_layer=2, n_head=4, n_positions=128, **ids)
    if arch == "gpt_neox":  # untied embed_out, partial rotary, parallel residual
        return tf.GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                max_position_embeddings=128, rotary_pct=0.5, tie_word_embeddings=False, **ids)
    if arch == "qwen2":  # grouped-query attention, q/k/v biases, untied head
        return tf.Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=96, max_position_embeddings=128, tie_word_embeddings=False, **ids)
    if arch == "opt":  # learned positions with an offset of 2, tied head
        return tf.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                            word_embed_proj_dim=32, max_position_embeddings=128, **ids)
    if arch == "llama":
        return tf.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=64, max_position_embeddings=128, tie_word_embeddings=True, **ids)
    raise ValueError(arch)


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory):
    """The fortunes-min corpus and one byte-level BPE (vocab 512) trained on its text."""
    from ablate.data.corpus import fortunes_min_corpus

    root = tmp_path_factory.mktemp("arch")
    fortunes_min_corpus(root / "corpus")
    bpe_tokenizer(root / "corpus", root / "tokenizer", EOS)
    return root / "corpus", root / "tokenizer"


def _seed_dir(arch: str, tok_src: Path, out: Path) -> Path:
    """A local HF directory: the random model (safetensors) and the tokenizer as its family's class."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.copytree(tok_src, out)
    if TOKENIZER_CLASS[arch]:
        path = out / "tokenizer_config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"tokenizer_class": TOKENIZER_CLASS[arch]}))
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(arch, len(tok), tok.eos_token_id), dtype=torch.float32)
    assert model.config.model_type == arch
    model.save_pretrained(str(out), safe_serialization=True)
    assert list(out.glob("*.safetensors")) and not list(out.glob("*.bin"))
    return out


@torch.inference_mode()
def _perplexity_by_hand(model, tokens: np.ndarray, seq_len: int) -> tuple[float, int]:
    """exp(Σ NLL / Σ predicted): non-overlapping windows of seq_len (a last shorter window counts
    if it has ≥ 2 tokens), every token but each window's first predicted from those before it."""
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    for start in range(0, tokens.size, seq_len):
        window = torch.from_numpy(tokens[start:start + seq_len].astype(np.int64))[None].to(device)
        if window.size(1) < 2:
            continue
        logits = model(input_ids=window).logits[0, :-1].double()
        nll += torch.nn.functional.cross_entropy(logits, window[0, 1:], reduction="sum").item()
        count += window.size(1) - 1
    return math.exp(nll / count), count


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "qwen2", "opt", "llama"])
def test_architecture_runs_the_pipeline_and_exports_what_it_scored(arch, corpus_and_tokenizer, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ablate.data.units import eval_sets, load_eval_tokens
    from ablate.store.index import Index
    from ablate.store.pool import Pool

    corpus, tok_src = corpus_and_tokenizer
    seed_dir = _seed_dir(arch, tok_src, tmp_path / f"{arch}-seed")
    cfg = tiny_config(tmp_path, **{"seed.mode": "import", "seed.import_path": str(seed_dir),
                                   "units.unit_tokens": 2048, "units.units_per_domain": 1,
                                   "units.eval_bytes": 3000, "train.seq_len": SEQ_LEN, "eval.seq_len": SEQ_LEN,
                                   "eval.precision": "fp32"})  # exact fp32 on a GPU too (no bf16 autocast)
    cfg.corpus.path = str(corpus)
    conf = ["-c", str(write_config(cfg, tmp_path / "study.yaml"))]

    def cli(*args: str) -> str:
        code, out, err = run_cli([*args, *conf], capsys)
        assert code == 0, f"{arch}: ablate {' '.join(args)} exited {code}: {err.strip()}"
        return out

    cli("units", "split")
    cli("seed")
    for unit in UNITS:
        cli("train-partition", unit)
    cli("train-mixture", *UNITS, "--budget", "unit")
    shown = cli("score-mixture", *UNITS)
    assert "merged" in shown and "union" in shown and "seed" in shown, shown
    out = tmp_path / "exported"
    cli("export-mixture", *UNITS, "--out", str(out))

    pool = Pool(cfg.pool)
    _, rows = Index(pool).query("SELECT method, coalesce(budget, ''), eval_set, ppl, n_tokens, nll_sum, device "
                                "FROM mixture_perplexity")
    table = {(m, b, e): (ppl, n, nll, dev) for m, b, e, ppl, n, nll, dev in rows}
    merged = {e: v for (m, _, e), v in table.items() if m == "merged"}
    assert sorted(merged) == ["fortunes", "literature"], rows
    assert {(m, b) for m, b, _ in table} == {("merged", ""), ("seed", ""), ("union", "unit")}, rows
    for e, (ppl, *_) in merged.items():  # the members did learn, and the merge is not the seed
        assert ppl < table[("seed", "", e)][0], (arch, e, ppl, table[("seed", "", e)][0])
    _, kinds = Index(pool).query("SELECT kind, count(*) FROM models GROUP BY kind ORDER BY kind")
    assert kinds == [("seed", 1), ("union", 1), ("unit", 2)], kinds

    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32, local_files_only=True)
    model.eval()
    assert model.config.model_type == arch
    exported_tok, source_tok = (AutoTokenizer.from_pretrained(str(d), local_files_only=True) for d in (out, seed_dir))
    assert type(exported_tok) is type(source_tok) and len(exported_tok) == model.config.vocab_size
    text = "Q: What is the difference between a duck?\nA: One leg is both the same."
    assert exported_tok(text)["input_ids"] == source_tok(text)["input_ids"]
    mixture = json.loads((out / "ablate_mixture.json").read_text())
    assert mixture["mixture"] == sorted(UNITS) and mixture["weights"] == [0.5, 0.5]
    for ev in eval_sets(pool):
        want_ppl, want_n, nll_sum, device = merged[ev["domain"]]
        ppl, n_tokens = _perplexity_by_hand(model.to(device), load_eval_tokens(pool, ev), SEQ_LEN)
        assert n_tokens == want_n, (arch, ev["domain"])
        assert math.isfinite(ppl) and 1 < ppl < len(model.get_input_embeddings().weight) * 2
        assert math.isclose(ppl, want_ppl, rel_tol=1e-5), (arch, ev["domain"], ppl, want_ppl)
        assert math.isclose(math.log(ppl) * n_tokens, nll_sum, rel_tol=1e-5)


def test_a_gpt2_seed_loads_without_transformers_bars_or_the_default_loss_notice(corpus_and_tokenizer, tmp_path):
    """`ablate seed` (from_pretrained) and `train-partition` (a forward with labels) of a GPT-2 seed, in a fresh
    process: no "Loading weights" bar, no `loss_type=None` notice; transformers' other warnings still pass."""
    import logging
    import os
    import subprocess
    import sys

    from ablate.data.corpus import study_corpus
    from ablate.data.units import split_units
    from ablate.models.model import _DefaultLossNotice
    from ablate.store.pool import Pool

    corpus, tok_src = corpus_and_tokenizer
    cfg = tiny_config(tmp_path, **{"seed.mode": "import", "seed.import_path": str(_seed_dir("gpt2", tok_src,
                                                                                               tmp_path / "seed")),
                                   "units.unit_tokens": 2048, "units.units_per_domain": 1, "units.eval_bytes": 3000,
                                   "train.seq_len": SEQ_LEN, "eval.seq_len": SEQ_LEN})
    cfg.corpus.path = str(corpus)
    split_units(cfg, Pool(cfg.pool), study_corpus(cfg), log=lambda *a: None)
    conf = str(write_config(cfg, tmp_path / "study.yaml"))
    script = ("import sys; from ablate.cli.app import app\n"
              f"for args in (['seed'], ['train-partition', '{UNITS[0]}']):\n"
              f"    app([*args, '-c', {conf!r}], standalone_mode=False)\n")
    env = dict(os.environ, ABLATE_QUIET="0", TQDM_DISABLE="", HF_HUB_DISABLE_PROGRESS_BARS="")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    both = run.stdout + run.stderr
    assert "Loading weights" not in both and "loss_type" not in both, both
    assert "trained" in both or "tokens in" in both, both  # ablate's own lines still print
    keep = logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0, "a real warning", None, None)
    drop = logging.LogRecord("transformers.modeling_utils", logging.WARNING, "", 0,
                             "`loss_type=None` was set in the config but it is unrecognized. Using the default "
                             "loss: `ForCausalLMLoss`.", None, None)
    assert _DefaultLossNotice().filter(keep) and not _DefaultLossNotice().filter(drop)
