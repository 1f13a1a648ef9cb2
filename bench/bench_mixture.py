"""Benchmark 3: scoring one mixture in memory vs the mergekit-style path through disk.

How to run:
    .venv/bin/python bench/bench_mixture.py [--quick] [--study DIR] [--out FILE]

Ours (what `ablate score-mixture` does per mixture): merge_members -> build the seed's
architecture -> load_state -> evaluate_tokens on every eval set.
Reference (the mergekit-style path): write the merged model as a normal HF directory
(ablate's export_mixture: config, safetensors, tokenizer files) -> from_pretrained ->
the same evaluate_tokens. Both use the same evaluator, so the ratio is the cost of the
round trip through disk and transformers' loader; we also report it without the eval.
User (end to end, what a user of mergekit writes): the same write to disk and from_pretrained,
then the user's own eval loop (common.user_loop: `model(input_ids, labels).loss` over the
windows stacked eval.batch_size at a time). Interleaved A/B/C per round (and per eval set inside
a round), medians of per-round ratios. `--size 135m`: the same at SmolLM2-135M (issue 33).

Merge alone: bytes of member weights read per second by merge_members for k = 2, 4, 8
members of the demo model, against a measured memory-copy bandwidth (bytes read/s).
The ~20M-parameter version is in bench_memory.py.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import common


def main(argv=None) -> dict:
    args = common.base_parser(__doc__).parse_args(argv)
    from transformers import AutoModelForCausalLM

    from ablate.models.model import load_state, model_from_config, seed_config
    from ablate.scoring.evaluate import evaluate_tokens
    from ablate.scoring.inplace import export_mixture
    from ablate.scoring.merge import merge_members

    cfg, pool, study = common.open_study(args)
    seed_id = study.seed["model_id"]
    units = common.unit_ids(cfg)
    members = [study.unit_member(u) for u in (units[0], units[cfg.units.units_per_domain])]  # two domains
    weights = [0.5, 0.5]
    sets = study.eval_tokens

    def evaluate(model) -> float:
        return sum(evaluate_tokens(model, t, study.byte_len, seq_len=cfg.eval.seq_len,
                                   batch_size=cfg.eval.batch_size)["nll_sum"] for t in sets.values())

    def ours_model():
        model = model_from_config(seed_config(pool, seed_id))
        load_state(model, merge_members(pool, members, weights), "merged weights")
        return model

    tmp = Path(tempfile.mkdtemp(prefix="ablate-bench-mix-"))
    n_export = [0]

    def user_eval(model) -> tuple[float, float]:
        """The user's loop over every eval set: (seconds, Σ NLL)."""
        t0, total = time.perf_counter(), 0.0
        for tokens in sets.values():
            total += common.user_loop(model, tokens, cfg.eval.seq_len, cfg.eval.batch_size)["nll_sum"]
        return time.perf_counter() - t0, total

    def disk_model():
        out = tmp / f"merged-{n_export[0]}"
        shutil.rmtree(tmp / f"merged-{n_export[0] - 1}", ignore_errors=True)  # at 135M each is 0.5 GB
        n_export[0] += 1
        export_mixture(pool, seed_id, members, weights, out, {"bench": True}, full_hash=cfg.verify_hash)
        return AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)

    nll = {}
    try:
        nll["ours"], nll["disk"] = evaluate(ours_model()), evaluate(disk_model())  # warm-up, and the check
        nll["user"] = user_eval(disk_model())[1]
        big = args.size != "demo"
        repeats = 1 if args.quick else 3 if big else 9
        phases = {f"{s}_{p}": [] for s in ("ours", "disk", "user") for p in ("merge", "eval")}
        makers = {"ours": ours_model, "disk": disk_model}
        for r in common.rounds(repeats, args.budget or (400 if big else 45)):
            order = ["ours", "disk"] if r % 2 == 0 else ["disk", "ours"]
            models = {}
            for side in order:
                dt, models[side] = common.timed(makers[side])
                phases[f"{side}_merge"].append(dt)
            dt, user_model = common.timed(disk_model)  # the user's end to end: its own write, load and loop
            phases["user_merge"].append(dt)
            phases["user_eval"].append(user_eval(user_model)[0])
            del user_model
            # The two evals are the same work on equal weights: alternate them eval set by eval
            # set, so a slow spell of the shared machine lands on both sides of the round.
            spent = {"ours": 0.0, "disk": 0.0}
            for i, tokens in enumerate(sets.values()):
                for side in order if i % 2 == 0 else order[::-1]:
                    spent[side] += common.timed(evaluate_tokens, models[side], tokens, study.byte_len,
                                                seq_len=cfg.eval.seq_len, batch_size=cfg.eval.batch_size)[0]
            for side in order:
                phases[f"{side}_eval"].append(spent[side])
        # Merge alone, demo model: bytes of member weights read per second.
        all_members = [study.unit_member(u) for u in units]
        bandwidth = {}
        for k in () if big else (2, 4, 8) if not args.quick else (2,):  # demo-size members only
            ids = (all_members * 2)[:k]
            nbytes = sum(pool.weights_path(m).stat().st_size for m in ids)
            merge_members(pool, ids)
            t = common.median(common.interleave({"m": lambda: merge_members(pool, ids)}, 3 if args.quick else 9)["m"])
            bandwidth[k] = {"seconds": t, "bytes_read": nbytes, "gb_s": nbytes / t / 1e9}
        copy_bw = common.copy_bandwidth()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = {s: [m + e for m, e in zip(phases[f"{s}_merge"], phases[f"{s}_eval"])] for s in ("ours", "disk", "user")}
    result = {
        "benchmark": "mixture", "k": len(members), "eval_sets": list(sets),
        "eval_tokens": int(sum(t.size for t in sets.values())), "repeats": len(total["ours"]),
        "model_bytes": pool.weights_path(members[0]).stat().st_size,
        "seconds": {k: common.median(v) for k, v in phases.items()},
        "ours_s": common.median(total["ours"]), "disk_s": common.median(total["disk"]),
        "ratio": common.paired_ratio(total["disk"], total["ours"]),
        "ratio_merge_and_load_only": common.paired_ratio(phases["disk_merge"], phases["ours_merge"]),
        # end to end against the user's path: write to disk, from_pretrained, their own eval loop
        "user_s": common.median(total["user"]), "ratio_vs_user": common.paired_ratio(total["user"], total["ours"]),
        "same_nll": nll["ours"] == nll["disk"], "user_nll_rel_diff": abs(nll["user"] / nll["ours"] - 1),
        "merge_bandwidth_demo": bandwidth, "copy_bandwidth_gb_s": copy_bw / 1e9,
    }
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
