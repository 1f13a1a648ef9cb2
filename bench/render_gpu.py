"""The GPU section of docs/results/bench/RESULTS.md, from `bench/gpu_135m.py`'s JSON (measured on a GPU machine,
copied beside results.json as gpu_135m.json; `bench/run.py` attaches it when it writes RESULTS.md).

How to run: nothing to run; `bench/run.py` calls `gpu_section(results["gpu_135m"])`.
"""

from __future__ import annotations


def gpu_section(g: dict) -> list[str]:
    """Training and evaluation at SmolLM2-135M's shape in bf16 on a GPU: ratios and MFU, every number measured."""
    t, e, peak = g["train"], g["eval"], g["gemm_peak_tflop_s"]
    s = g["sizes"]
    return ["## At 135M on a GPU (measured, bf16)", "",
            f"`python bench/gpu_135m.py --out DIR` on one {g['device']} (torch {g['torch']}, {g['precision']}); "
            f"{g['model']}; batch {s['batch']} x {s['seq']} tokens, {s['steps_per_run']} steps per run, "
            f"{s['eval_windows']} eval windows, {s['rounds']} interleaved rounds (medians); total {g['total_s']:.0f} s. "
            f"MFU denominator: {g['mfu_denominator']} ({peak['8192^3']:.0f} TFLOP/s; the LM head's own shape "
            + ", ".join(f"{k} {v:.0f}" for k, v in peak.items() if k != "8192^3") + " TFLOP/s).", "",
            "| benchmark on the GPU | ours | reference | ratio | MFU (ours / reference) |", "|---|---|---|---|---|",
            f"| training step vs transformers.Trainer (fused AdamW both) | {t['ours_step_s']:.3f} s | "
            f"{t['trainer_step_s']:.3f} s | {t['ratio_vs_trainer']:.2f} | {t['mfu']:.2f} / {t['trainer_mfu']:.2f} |",
            f"| evaluation vs a user's loop (`model(ids, labels=ids).loss`) | {e['tok_s']:,.0f} tok/s | "
            f"{e['tok_s'] / e['ratio_vs_user']:,.0f} tok/s | {e['ratio_vs_user']:.2f} | "
            f"{e['mfu']:.2f} / {e['user_mfu']:.2f} |", "",
            f"Evaluation's summed NLL differs from the user's loop by {e['nll_rel_diff_vs_user']:.1e} (relative). "
            "At 135M a hidden size of 576 keeps every GEMM but the LM head small: both sides sit near "
            f"{e['mfu']:.0%} of the bf16 peak, so on a GPU ablate is level with the reference paths, not ahead; "
            "the headroom is in larger batches per kernel (several members per forward, ablate/scoring/batched.py) "
            "and fused kernels, not measured here.", ""]
