"""Benchmark 9: sweep throughput — the batched evaluator against the evaluation path it replaced, and screening.

How to run:
    .venv/bin/python bench/bench_throughput.py [--quick] [--study DIR] [--mixtures 48] [--screen-units 6]
                                               [--fidelity configs/fidelity/*.yaml]

1. sweep: the first `--mixtures` Gray-code mixtures of the bench study's 8 units, on every eval set, three ways,
   interleaved per round (medians):
     reference  the sweep worker before issue 13, kept below: one model, RunningSum.load_into, then
                evaluate_tokens per eval set; one process with every core (the old default);
     ours       ablate.scoring.sweep.score_segment (ModelStack: fused chunked loss, M models per pass) in one process;
     ours_jobs  the same in one process per core, one thread each (the thread rule, `--jobs` = cores).
   Mixtures per minute, and the largest relative difference of Σ NLL against the reference (must be <= 1e-6).
2. gemm: achieved forward GFLOP/s of ModelStack on the demo model for M = 1, 2, 4, 8 against a GEMM peak
   measured at this thread count (at 1024^3 and at the LM head's own shape).
3. screen: the bench study's full sweep vs `sweep --screen` (every eval set: the same top 3? eval tokens
   full / screened), and for each --fidelity study config, `search --screen` on every eval set against the
   ranking its pool's full rows give (the pool is hard-linked into a temp dir without its result rows).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import common


def reference_segment(study, unit_ids: list[str], masks: list[int]) -> dict:
    """The pre-batching worker loop (ablate/scoring/sweep.py before issue 13): {(mask, eval set): Σ NLL}."""
    from ablate.models.model import model_from_config, seed_config
    from ablate.scoring.evaluate import evaluate_tokens
    from ablate.scoring.merge import RunningSum

    cfg, pool = study.cfg, study.pool
    members = [study.unit_member(u) for u in unit_ids]
    model = model_from_config(seed_config(pool, study.seed["model_id"]))
    running = RunningSum(pool, members)
    out = {}
    for mask in masks:
        running.move_to({members[i] for i in range(len(members)) if mask >> i & 1})
        running.load_into(model, "running average")
        for ev in study.evals:
            out[(mask, ev["domain"])] = evaluate_tokens(model, study.eval_tokens[ev["domain"]], study.byte_len,
                                                        seq_len=cfg.eval.seq_len,
                                                        batch_size=cfg.eval.batch_size)["nll_sum"]
    return out


def _by_key(rows: list[dict], unit_ids: list[str]) -> dict:
    return {(sum(1 << unit_ids.index(u) for u in r["mixture"]), r["eval_set"]): r["nll_sum"] for r in rows}


def sweep_compare(cfg, pool, study, unit_ids: list[str], n_mix: int, budget: float | None, repeats: int = 3) -> dict:
    import torch

    from ablate.scoring.merge import gray_code_order
    from ablate.scoring.sweep import local_results
    from ablate.scoring.sweep_segment import score_segment

    cores = os.cpu_count() or 1
    masks = gray_code_order(len(unit_ids))[:n_mix]
    args = (cfg.model_dump(mode="json"), str(pool.root), unit_ids)
    got: dict[str, dict] = {}

    def reference():
        torch.set_num_threads(cores)
        got["reference"] = reference_segment(study, unit_ids, masks)

    def ours():
        got["ours"] = _by_key(score_segment(*args, masks, None, cores), unit_ids)

    def ours_jobs():
        rows = [r for part in local_results(cfg, pool, unit_ids, masks, None, cores, 1) for r in part]
        got["ours_jobs"] = _by_key(rows, unit_ids)

    times = common.interleave({"reference": reference, "ours": ours, "ours_jobs": ours_jobs}, repeats, budget)
    torch.set_num_threads(cores)
    worst = max(abs(got[k][key] - v) / abs(v) for k in ("ours", "ours_jobs") for key, v in got["reference"].items())
    per_min = {k: n_mix / common.median(v) * 60 for k, v in times.items()}
    return {"mixtures": n_mix, "eval_sets": len(study.evals), "rounds": len(times["reference"]),
            "mix_per_min": per_min, "ratio_ours": per_min["ours"] / per_min["reference"],
            "ratio_ours_jobs": per_min["ours_jobs"] / per_min["reference"],
            "paired_ratio_ours": common.paired_ratio(times["reference"], times["ours"]),
            "max_rel_diff_nll": worst, "seconds": {k: common.median(v) for k, v in times.items()}}


def gemm_share(study, slots=(1, 2, 4, 8)) -> dict:
    """Achieved forward FLOP/s of the batched evaluator vs the measured GEMM peak, per M."""
    import torch

    from ablate.models.model import model_from_config, seed_config
    from ablate.scoring.batched import EvalWindows, ModelStack
    from ablate.scoring.evaluate import windows
    from ablate.scoring.merge import RunningSum

    cfg, pool = study.cfg, study.pool
    ev = max(study.evals, key=lambda e: study.eval_tokens[e["domain"]].size)
    tokens = study.eval_tokens[ev["domain"]]
    win = EvalWindows.build(tokens, study.byte_len, cfg.eval.seq_len)
    spans = windows(int(tokens.size), cfg.eval.seq_len)
    member = study.unit_member(sorted(u for u in _units(pool))[0])
    running = RunningSum(pool, [member])
    running.move_to({member})
    out = {}
    for m in slots:
        stack = ModelStack(model_from_config(seed_config(pool, study.seed["model_id"])), m)
        for slot in range(m):
            stack.load(slot, running)
        stack.window_nll(win, cfg.eval.batch_size)  # warm
        best = min(common.timed(stack.window_nll, win, cfg.eval.batch_size)[0] for _ in range(3))
        out[f"M={m}"] = m * common.forward_flops(stack.model.config, spans) / best
    config = stack.model.config
    d, v, rows = config.hidden_size, config.vocab_size, cfg.eval.batch_size * cfg.eval.seq_len
    a, b = torch.randn(rows, d), torch.randn(d, v)
    head_peak = 2 * rows * d * v / min(common.timed(torch.mm, a, b)[0] for _ in range(7))
    best_m = max(out, key=out.get)
    stack = ModelStack(stack.model, int(best_m[2:]))
    for slot in range(stack.slots):
        stack.load(slot, running)
    split = time_split(stack, win, cfg.eval.batch_size, stack.slots * common.forward_flops(config, spans, False))
    return {"gflops": {k: v / 1e9 for k, v in out.items()}, "best": best_m, "time_split": split,
            "peak_1024_gflops": common.matmul_peak_flops() / 1e9, "peak_head_shape_gflops": head_peak / 1e9,
            "share_of_1024_peak": out[best_m] / common.matmul_peak_flops(),
            "threads": torch.get_num_threads(), "eval_set": ev["domain"], "tokens": int(tokens.size)}


GEMM_OPS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm"}


def time_split(stack, win, batch_size: int, gemm_flops: float) -> dict:
    """Where one pass's time goes (torch.profiler, self CPU time): the GEMMs (projections, LM head) and
    their own GFLOP/s, and the biggest of the rest (log-softmax, attention, elementwise ops)."""
    from torch.profiler import profile

    stack.window_nll(win, batch_size)
    with profile() as prof:
        stack.window_nll(win, batch_size)
    ops = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    total, gemm = sum(ops.values()), sum(v for k, v in ops.items() if k in GEMM_OPS)
    rest = sorted(((v / total, k) for k, v in ops.items() if k not in GEMM_OPS), reverse=True)[:5]
    return {"gemm_share_of_time": gemm / total, "gemm_gflops": gemm_flops / gemm / 1e9,
            "largest_other_ops": {k: round(v, 3) for v, k in rest}}


def _units(pool):
    from ablate.data.units import unit_ids

    return unit_ids(pool)


def _linked_pool(src: Path, dst: Path) -> Path:
    """A copy of a pool that shares the weight files (hard links) but has no results, screens or index."""
    shutil.copytree(src, dst, copy_function=os.link,
                    ignore=shutil.ignore_patterns("results", "screened", "searches", "index.duckdb*", ".index*",
                                                  "work"))
    return dst


def _top3(rows) -> list[tuple]:
    return [m for _, m in sorted((p, tuple(m)) for m, p in rows)[:3]]


def screen_bench_study(cfg, pool, unit_ids: list[str], tmp: Path) -> dict:
    """The bench study: full sweep vs screened sweep of all 2^8 - 1 mixtures, per eval set."""
    from ablate.scoring.sweep import run_sweep
    from ablate.store.index import Index
    from ablate.store.pool import Pool

    out = {}
    for name, screen in (("full", False), ("screened", True)):
        c = cfg.model_copy(deep=True)
        c.pool = str(_linked_pool(Path(pool.root), tmp / name / "pool"))
        t, res = common.timed(run_sweep, c, Pool(c.pool), unit_ids, jobs=1, screen=screen, log=lambda *a: None)
        _, rows = Index(Pool(c.pool)).query("SELECT eval_set, mixture, ppl FROM mixture_perplexity "
                                            "WHERE method = 'merged'")
        out[name] = {"seconds": t, "rows": rows, "summary": res.get("screened")}
    evals = sorted({r[0] for r in out["full"]["rows"]})
    same = {e: _top3([(m, p) for ee, m, p in out["full"]["rows"] if ee == e]) ==
            _top3([(m, p) for ee, m, p in out["screened"]["rows"] if ee == e]) for e in evals}
    s = out["screened"]["summary"]
    return {"study": f"bench ({len(unit_ids)} units, {2 ** len(unit_ids) - 1} mixtures)", "same_top3": same, "all_same_top3": all(same.values()),
            "eval_tokens_full": s["eval_tokens_unscreened"], "eval_tokens_screened": s["eval_tokens"],
            "token_ratio": s["eval_tokens_unscreened"] / s["eval_tokens"],
            "seconds_full": out["full"]["seconds"], "seconds_screened": out["screened"]["seconds"]}


def screen_fidelity_study(config: str, tmp: Path) -> dict:
    """search --screen on every eval set of a trained study vs the ranking of its pool's full rows."""
    from ablate.core.config import load_config
    from ablate.optimize.search import candidates
    from ablate.store.index import Index
    from ablate.store.pool import Pool
    from ablate.workflows.steps import run_search  # rank + record: the rows and what screening saved

    cfg = load_config(Path(config), None)
    pool = Pool(cfg.pool)
    units = _units(pool)
    cands = {tuple(c) for c, w in candidates(units, min(3, len(units)), [1.0])}
    _, rows = Index(pool).query("SELECT eval_set, mixture, ppl FROM mixture_perplexity WHERE method = 'merged' "
                                "AND uniform")
    linked = cfg.model_copy(deep=True)
    linked.pool = str(_linked_pool(Path(pool.root), tmp / Path(config).stem / "pool"))
    per_eval, used, whole = {}, 0, 0
    for ev in sorted({r[0] for r in rows}):
        full = [(m, p) for e, m, p in rows if e == ev and tuple(m) in cands]
        if len(full) < len(cands):
            continue  # the pool lacks a full ranking on this eval set
        res = run_search(linked, Pool(linked.pool), ev, max_size=3, screen=True, top=len(cands), log=lambda *a: None)
        ranked = [tuple(r["mixture"]) for r in res["rows"]]
        per_eval[ev] = ranked[:3] == _top3(full)
        if "screened" in res:
            used += res["screened"]["eval_tokens"]
            whole += res["screened"]["eval_tokens_unscreened"]
    return {"study": Path(config).stem, "candidates": len(cands), "same_top3": per_eval,
            "all_same_top3": all(per_eval.values()), "eval_tokens_full": whole, "eval_tokens_screened": used,
            "token_ratio": whole / max(1, used)}


def main(argv=None) -> dict:
    p = common.base_parser(__doc__)
    p.add_argument("--mixtures", type=int, default=48, help="Gray-code mixtures timed in the sweep comparison")
    p.add_argument("--fidelity", nargs="*", default=[], help="study configs with trained pools to screen-search")
    p.add_argument("--no-screen", action="store_true", help="skip part 3 (screening)")
    p.add_argument("--screen-units", type=int, default=6, help="units of the bench study's screened sweep (8: 255 "
                                                                 "mixtures, ~7 min on 2 cores; 6: 63)")
    args = p.parse_args(argv)
    cfg, pool, study = common.open_study(args)
    unit_ids = _units(pool)
    n_mix = min(args.mixtures, 2 ** len(unit_ids) - 1) if not args.quick else 7
    result = {"benchmark": "throughput", "cores": os.cpu_count(),
              # --quick (the smoke test) checks that it runs and agrees, not how fast: one round, M = 1, 2
              "sweep": sweep_compare(cfg, pool, study, unit_ids, n_mix, args.budget, 1 if args.quick else 3),
              "gemm": gemm_share(study, (1, 2) if args.quick else (1, 2, 4, 8))}
    with tempfile.TemporaryDirectory(prefix="ablate-bench-screen-") as tmp:
        result["screen"] = [] if args.no_screen else [
            screen_bench_study(cfg, pool, unit_ids[:args.screen_units], Path(tmp))]
        for config in args.fidelity:
            result["screen"].append(screen_fidelity_study(config, Path(tmp)))
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
