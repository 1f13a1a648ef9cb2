"""Benchmark 2: evaluation throughput of `ablate.scoring.evaluate.evaluate_tokens` vs the loops a user writes.

How to run:
    .venv/bin/python bench/bench_eval.py [--quick] [--study DIR] [--out FILE]
    .venv/bin/python bench/bench_eval.py --size 135m       # SmolLM2-135M (a real seed; GEMMs dominate)
    .venv/bin/python bench/bench_eval.py --size 135m --compile   # + torch.compile's break-even (~2 min more)

One trained unit member of the bench study (demo architecture) is evaluated on every
eval set of the study, four ways, interleaved A/B/C/D per repetition (medians reported):
  ours        evaluate_tokens (batch 32, logits only for predicting positions)
  before      the previous evaluate_tokens body (full logits, then [:, :-1] and a copy)
  user_b1     `model(input_ids=w, labels=w).loss` per window, batch 1, under no_grad
  user_batch  the same with the full windows stacked 32 at a time (tail window alone)
All four must give the same perplexity to 1e-4 (relative). The process starts as ablate's evaluation
does (load_study -> threads.claim: its share of the cores, and freed memory kept for the next batch,
ablate/models/allocator.py); the user loops run in the same process and get that too, so the ratios vs them
leave the allocator's gain out (bench_train.py runs each side in a fresh process instead).

The "framework tax" as a number: achieved forward FLOP/s (matmul FLOPs of the model,
attention counted causally, LM head on predicting positions only; fastest round) against a
measured fp32 GEMM peak on this machine (best of 7), at 1024^3 and at the model's own
largest GEMM shape. Outside the GEMMs: the loss alone on one batch, chunked (ablate/scoring/losses.py)
vs one log-softmax over all logits (bit-identical sums); with --compile, torch.compile's cold compile
time, its speed-up per batch and the batches it takes to pay off (not bit-identical: reported).
"""

from __future__ import annotations

import argparse
import math

import common


def before_change(model, tokens, seq_len: int, batch_size: int) -> dict:
    """evaluate_tokens as it was before this benchmark's change (full logits, sliced, copied)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ablate.scoring.evaluate import batches, windows

    nll = torch.zeros((), dtype=torch.float64)
    n = 0
    with torch.inference_mode():
        for batch in batches(tokens, windows(int(tokens.size), seq_len), batch_size):
            ids = torch.from_numpy(batch.astype(np.int64))
            logits = model(input_ids=ids).logits
            target = ids[:, 1:]
            nll += F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)), target.reshape(-1),
                                   reduction="sum").double()
            n += target.numel()
    total = float(nll)
    return {"nll_sum": total, "n_tokens": n, "ppl": math.exp(total / n)}


def compile_break_even(model, tokens, seq_len: int, batch_size: int, rounds: int = 3) -> dict:
    """torch.compile on the evaluation forward (cold: a fresh inductor cache): compile seconds, steady seconds
    per batch compiled vs eager (interleaved), the batches a sweep needs before compiling pays, and how far the
    compiled sums move (inductor fuses RMSNorm, rotary and SiLU, so the bits change)."""
    import os
    import tempfile

    import numpy as np
    import torch

    from ablate.scoring.losses import token_nll, total_nll

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="ablate-bench-inductor-")
    n = min(int(tokens.size) // seq_len, batch_size) * seq_len
    ids = torch.from_numpy(tokens[:n].astype(np.int64)).view(-1, seq_len)
    keep = torch.arange(seq_len - 1)

    def nll(m):
        with torch.inference_mode():
            return float(total_nll(token_nll(m(input_ids=ids, logits_to_keep=keep).logits, ids[:, 1:])))

    eager_nll = nll(model)
    compiled = torch.compile(model, dynamic=False)
    first, compiled_nll = common.timed(nll, compiled)
    times = common.interleave({"eager": lambda: nll(model), "compiled": lambda: nll(compiled)}, rounds)
    e, c = common.median(times["eager"]), common.median(times["compiled"])
    return {"compile_s": first - c, "eager_batch_s": e, "compiled_batch_s": c, "speedup": e / c,
            "break_even_batches": (first - c) / (e - c) if e > c else None, "batch_tokens": ids.numel(),
            "rel_nll_diff": abs(compiled_nll / eager_nll - 1)}


def gemm_peak(m: int, k: int, n: int, repeats: int = 7) -> float:
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    torch.mm(a, b)
    return 2 * m * k * n / min(common.timed(torch.mm, a, b)[0] for _ in range(repeats))


def loss_split(model, tokens, seq_len: int, batch_size: int, repeats: int = 5) -> dict:
    """The loss alone on one batch of the model's real logits: evaluate_tokens' old formula (one log-softmax
    over all [tokens, vocab] logits, nll_loss, a gather) against ablate/scoring/losses.py (the same in token
    chunks that stay in cache), interleaved; their sums must keep their bits."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ablate.scoring.losses import token_nll, total_nll, window_sums

    n = min(int(tokens.size) // seq_len, batch_size) * seq_len
    ids = torch.from_numpy(tokens[:n].astype(np.int64)).view(-1, seq_len)
    with torch.inference_mode():
        logits, target = model(input_ids=ids, logits_to_keep=torch.arange(seq_len - 1)).logits, ids[:, 1:]

        def whole():
            logp = F.log_softmax(logits.float().reshape(-1, logits.size(-1)), -1)
            tok = -logp.gather(1, target.reshape(-1, 1)).view(target.shape)
            return F.nll_loss(logp, target.reshape(-1), reduction="sum").double(), tok.double().sum(1)

        def chunked():
            tok = token_nll(logits, target)
            return total_nll(tok).double(), window_sums(tok)

        times = common.interleave({"whole": whole, "chunked": chunked}, repeats)
        (a, wa), (b, wb) = whole(), chunked()
    med = {k: common.median(v) for k, v in times.items()}
    return {"tokens": target.numel(), "vocab": logits.size(-1), "seconds": med, "speedup": med["whole"] / med["chunked"],
            "bit_identical": bool(torch.equal(a, b) and torch.equal(wa, wb))}


def malloc_child(args) -> dict:
    """In a fresh process: ablate's evaluation of one eval set, timed per call (the allocator_gain child)."""
    import json

    from ablate.models import allocator
    from ablate.scoring.evaluate import evaluate_tokens

    cfg, pool, study = common.open_study(args)  # load_study -> threads.claim, as `ablate score-mixture` starts
    model = common.first_member(cfg, pool, study)
    tokens = next(iter(study.eval_tokens.values()))
    tokens = tokens[: 4 * cfg.eval.batch_size * cfg.eval.seq_len + 1]  # up to four batches
    run = lambda: evaluate_tokens(model, tokens, study.byte_len, seq_len=cfg.eval.seq_len,  # noqa: E731
                                  batch_size=cfg.eval.batch_size)
    run()
    seconds = common.median([common.timed(run)[0] for _ in range(3 if not args.quick else 1)])
    out = {"malloc": allocator.reuse_freed_memory(), "seconds": seconds}
    print(json.dumps(out))
    return out


def allocator_gain(args, pairs: int = 2) -> dict:
    """ablate/models/allocator.py's gain on evaluation: the same calls in fresh processes with freed memory kept
    (every ablate job) and with ABLATE_MALLOC=system (the C library's malloc), alternating."""
    import json
    import os
    import subprocess

    cmd = [common.python(), __file__, "--malloc-child", *common.study_argv(args)]
    times = {"kept": [], "system": []}
    for _ in range(1 if args.quick else pairs):
        for mode in times:
            env = {**os.environ, "ABLATE_MALLOC": "" if mode == "kept" else "system"}
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            times[mode].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    kept, system = common.median(times["kept"]), common.median(times["system"])
    return {"kept_s": kept, "system_s": system, "speedup": system / kept, "pairs": len(times["kept"])}


GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product_flash_attention_for_cpu")


def op_shares(model, tokens, byte_len, seq_len: int, batch_size: int) -> dict:
    """Where one evaluate_tokens call spends its time, by torch op (self CPU time, torch.profiler): the share
    in matrix multiplies (and CPU flash attention) vs everything else — the measured reason when the achieved
    FLOP/s stay far from the GEMM peak."""
    from torch.profiler import ProfilerActivity, profile

    from ablate.scoring.evaluate import evaluate_tokens

    n = min(int(tokens.size), batch_size * seq_len + 1)  # one full batch of windows
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        evaluate_tokens(model, tokens[:n], byte_len, seq_len=seq_len, batch_size=batch_size)
    ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(ops.values()) or 1.0
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:8]
    return {"gemm_share": sum(v for k, v in ops.items() if k in GEMM_OPS) / total,
            "top_ops": {k: v / total for k, v in top}}


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__)
    parser.add_argument("--compile", action="store_true", help="also torch.compile's break-even (cold compile: "
                                                                "~1.5 min at 135M on one thread)")
    parser.add_argument("--malloc-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.malloc_child:
        return malloc_child(args)
    import torch

    from ablate.models.model import count_params
    from ablate.scoring.evaluate import evaluate_tokens, windows

    cfg, pool, study = common.open_study(args)
    model = common.first_member(cfg, pool, study)
    seq_len, bs = cfg.eval.seq_len, cfg.eval.batch_size
    sets = dict(study.eval_tokens)
    if args.quick:
        sets = {k: v[: 4 * seq_len + 17] for k, v in list(sets.items())[:1]}

    methods = {
        "ours": lambda t: evaluate_tokens(model, t, study.byte_len, seq_len=seq_len, batch_size=bs),
        "before": lambda t: before_change(model, t, seq_len, bs),
        "user_b1": lambda t: common.user_loop(model, t, seq_len, 1),
        "user_batch": lambda t: common.user_loop(model, t, seq_len, bs),
    }
    for t in sets.values():
        methods["ours"](t)  # warm-up: lazy inits, allocator
    repeats = 1 if args.quick else 3 if args.size != "demo" else 7  # 135M: a round is ~1 min
    # Interleaved per eval set, order rotating: each (round, eval set) is a short A/B/C/D block
    # that shares the machine's state, and ratios are medians over those blocks.
    blocks = {k: [] for k in methods}  # seconds per (round, eval set)
    results = {k: {"nll_sum": 0.0, "n_tokens": 0} for k in methods}
    names = list(methods)
    for r in common.rounds(repeats, args.budget or (300 if args.size != "demo" else 75)):
        for tokens in sets.values():
            for name in names[r % len(names):] + names[:r % len(names)]:
                dt, res = common.timed(methods[name], tokens)
                blocks[name].append(dt)
                if r == 0:
                    results[name]["nll_sum"] += res["nll_sum"]
                    results[name]["n_tokens"] += res["n_tokens"]
    n_sets = len(sets)
    times = {k: [sum(v[i:i + n_sets]) for i in range(0, len(v), n_sets)] for k, v in blocks.items()}
    ppl = {k: math.exp(r["nll_sum"] / r["n_tokens"]) for k, r in results.items()}
    n_tokens = results["ours"]["n_tokens"]
    assert all(r["n_tokens"] == n_tokens for r in results.values())
    med = {k: common.median(v) for k, v in times.items()}
    tok_s = {k: n_tokens / v for k, v in med.items()}
    spans = [w for t in sets.values() for w in windows(int(t.size), seq_len)]
    flops = common.forward_flops(model.config, spans)
    d, vocab = model.config.hidden_size, model.config.vocab_size
    peak_1024 = gemm_peak(1024, 1024, 1024)
    peak_model = gemm_peak(bs * (seq_len - 1), d, vocab)  # the LM head GEMM, the model's largest
    _, n_nonembed = count_params(model)
    result = {
        "benchmark": "eval", "threads": torch.get_num_threads(), "eval_sets": list(sets), "tokens": n_tokens,
        "seq_len": seq_len, "batch": bs, "repeats": len(times["ours"]),
        "seconds": med, "runs_s": times, "tok_s": tok_s,
        # median over (round, eval set) blocks of the block's time ratio
        "ratio_vs_user_b1": common.paired_ratio(blocks["user_b1"], blocks["ours"]),
        "ratio_vs_user_batch": common.paired_ratio(blocks["user_batch"], blocks["ours"]),
        "ratio_vs_before": common.paired_ratio(blocks["before"], blocks["ours"]),
        "ppl": ppl, "max_rel_ppl_diff": max(abs(p / ppl["ours"] - 1) for p in ppl.values()),
        "ppl_identical_1e-4": all(math.isclose(p, ppl["ours"], rel_tol=1e-4) for p in ppl.values()),
        "ours_equals_before_bitwise": results["ours"]["nll_sum"] == results["before"]["nll_sum"],
        "forward_gflop": flops / 1e9, "stored_convention_gflop": 2 * n_nonembed * n_tokens / 1e9,
        # best round vs best GEMM: both at the machine's least-contended moment in this run
        "achieved_gflop_s": flops / min(times["ours"]) / 1e9,
        "gemm_peak_gflop_s": {"1024^3": peak_1024 / 1e9, f"{bs * (seq_len - 1)}x{d}x{vocab}": peak_model / 1e9},
        "fraction_of_peak": flops / min(times["ours"]) / peak_1024,
        "profile": op_shares(model, next(iter(sets.values())), study.byte_len, seq_len, bs),
        "loss": loss_split(model, next(iter(sets.values())), seq_len, bs, 3 if args.quick else 7),
        "compile": compile_break_even(model, next(iter(sets.values())), seq_len, bs) if args.compile else None,
        "allocator": allocator_gain(args),
    }
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
