"""Benchmark 10: screening chosen by a protocol over several studies, reported out of sample.

How to run:
    .venv/bin/python bench/bench_screen.py                       # the bench study (+ two large eval sets)
    .venv/bin/python bench/bench_screen.py --studies configs/fidelity/*.yaml configs/medium.yaml --seeds 10

1. Per study, every uniform mixture of its units (all 2^n - 1, Gray order) is evaluated in full on every
   eval set, window by window, with the batched evaluator: the [mixtures, windows] NLL table a full sweep
   computes. It is cached in --cache by the members' and eval sets' content (a study's table is built once).
   The bench study gets two large eval files beside its 8 kB ones (`--no-large-eval` to skip): 200 kB of
   quotes from its corpus and 200 kB of man pages from data/fidelity-corpus when that exists.
2. `ablate.scoring.screen.race` — the code `sweep --screen` runs — is replayed on those tables, in the shuffled
   window order screening uses (batched.shuffle_order), for each setting of a grid (first round's tokens,
   growth) and each of --seeds shuffles: does the top 3 of the finalists equal the full top 3, and how
   many eval tokens did it take (full / screened)?
3. Leave one study out: a setting is chosen on the other studies (the largest geometric-mean saving among
   the settings that kept the top 3 on every eval set and shuffle there) and reported on the held-out one.
   The shipped default (config `eval.screen_*`) is reported on every eval set as well, shuffled and in file
   order (a prefix of the file rather than a sample of it).

Replaying on the full table gives the same decisions as `sweep --screen` (the race sees the same
per-window sums); tests/test_screen.py runs the real screened sweep end to end.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import common

GRID_TOKENS = (512, 1024, 2048, 4096)
GRID_GROWTH = (2, 4)
LARGE_EVAL_BYTES = 200_000


# -- 1. the full per-window table of a study ---------------------------------------------------------------
def window_table(cfg, cache: Path, log=print) -> dict:
    """{eval set: (nll [mixtures, windows] float64, predicted tokens per window)} of every uniform mixture."""
    import numpy as np

    from ablate.data.units import unit_ids
    from ablate.scoring.batched import study_stack
    from ablate.scoring.merge import RunningSum, gray_code_order
    from ablate.store.pool import Pool
    from ablate.study.context import load_study

    pool = Pool(cfg.pool)
    study = load_study(cfg, pool)
    members = [m for m in (study.unit_member(u, required=False) for u in unit_ids(pool)) if m]
    key = hashlib.sha256(json.dumps([members, [(ev["domain"], hashlib.sha256(
        study.eval_tokens[ev["domain"]].tobytes()).hexdigest()) for ev in study.evals],
        cfg.eval.seq_len]).encode()).hexdigest()[:16]
    path = cache / f"{cfg.name}-{key}.npz"
    if not path.exists():
        stack, windows, _ = study_stack(study)
        running, masks = RunningSum(pool, members), gray_code_order(len(members))
        table = {ev["domain"]: np.zeros((len(masks), len(windows[ev["domain"]]))) for ev in study.evals}
        for i, mask in enumerate(masks):
            running.move_to({members[j] for j in range(len(members)) if mask >> j & 1})
            stack.load(0, running)
            for name, w in windows.items():
                table[name][i] = stack.window_nll(w, cfg.eval.batch_size, 1)[0]
            if i % 32 == 0:
                log(f"  {cfg.name}: {i}/{len(masks)} mixtures")
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f"nll_{k}": v for k, v in table.items()},
                 **{f"npred_{k}": windows[k].n_pred for k in table})
    data = np.load(path)
    return {k[4:]: (data[k], data["npred_" + k[4:]]) for k in data.files if k.startswith("nll_")}


def with_large_evals(cfg, work: Path):
    """A hard-linked copy of the bench pool with two ~200 kB eval files added (the 8 kB ones are tens of
    windows: too short for screening to show what it does on a real eval set)."""
    from ablate.data.corpus import study_corpus
    from ablate.data.units import split_units
    from ablate.store.pool import Pool

    files = {"quotes-large": Path(cfg.corpus.path) / "quotes.jsonl",
             "manpages-large": common.ROOT / "data" / "fidelity-corpus" / "manpages.jsonl"}
    eval_sets = {}
    work.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        if src.exists():
            dst = work / f"{name}.jsonl"
            _tail_documents(src, dst, LARGE_EVAL_BYTES)
            eval_sets[name] = {"path": str(dst)}
    big = cfg.model_copy(deep=True, update={"name": "bench-large-evals", "pool": str(work / "pool")})
    big = big.model_validate({**big.model_dump(mode="json"), "eval_sets": eval_sets})
    if not (work / "pool").exists():
        shutil.copytree(cfg.pool, work / "pool", copy_function=os.link,
                        ignore=shutil.ignore_patterns("results", "screened", "searches", "index.duckdb*", "work"))
        split_units(big, Pool(big.pool), study_corpus(big), log=lambda *a: None)
    return big


def _tail_documents(src: Path, dst: Path, max_bytes: int) -> None:
    """The last whole documents of a JSONL corpus file, up to max_bytes (a file's end: never a unit's text)."""
    docs = [json.loads(line)["text"] for line in src.read_text().splitlines() if line.strip()]
    kept, total = [], 0
    for doc in reversed(docs):
        size = len(doc.encode("utf-8"))
        if kept and total + size > max_bytes:
            break
        kept.append(doc)
        total += size
    dst.write_text("".join(json.dumps({"text": d}) + "\n" for d in kept))


# -- 2. replaying the race ---------------------------------------------------------------------------------
def replay(nll, n_pred, *, tokens: int, growth: int, seq_len: int, confidence: float, keep: int,
           seed: int | None) -> tuple[bool, float]:
    """(the same top 3 as the full table?, eval tokens full / screened) of one screened race; seed None:
    in file order (what screening did before it shuffled)."""
    import numpy as np

    from ablate.scoring.batched import shuffle_order
    from ablate.scoring.screen import first_windows, race

    n_cands, n_windows = nll.shape
    n_full = n_windows - (1 if n_pred[-1] < seq_len - 1 else 0)
    order = shuffle_order(n_full, n_windows, seed) if seed is not None else np.arange(n_windows)
    table, pred = nll[:, order], n_pred[order]
    result = race(n_cands, n_windows, lambda idx, a, b: table[idx, a:b], first=first_windows(tokens, seq_len),
                  growth=growth, confidence=confidence, keep=keep)
    totals = nll.sum(1)
    full_top = [int(c) for c in np.argsort(totals, kind="stable")[:3]]
    got_top = sorted(result.finalists, key=lambda c: totals[c])[:3]
    used = sum(int(pred[:r].sum()) for r in result.reached)
    return got_top == full_top, n_cands * int(pred.sum()) / used


def score_setting(tables: dict, setting: tuple[int, int], seeds: int, seq_len: dict, ev_cfg,
                  shuffled: bool = True) -> dict:
    """Per study: share of (eval set, shuffle) races with the same top 3, geometric-mean saving."""
    out = {}
    for study, sets in tables.items():
        runs = [replay(nll, pred, tokens=setting[0], growth=setting[1], seq_len=seq_len[study],
                       confidence=ev_cfg.screen_confidence, keep=ev_cfg.screen_keep, seed=s)
                for nll, pred in sets.values() for s in (range(seeds) if shuffled else [None])]
        out[study] = {"same_top3": sum(a for a, _ in runs) / len(runs),
                      "saving": math.exp(sum(math.log(b) for _, b in runs) / len(runs)),
                      "races": len(runs)}
    return out


# -- 3. leave one study out --------------------------------------------------------------------------------
def leave_one_out(scores: dict) -> dict:
    """For each study: the setting chosen on the others, and how it did on the held-out study."""
    studies = sorted(next(iter(scores.values())))
    out = {}
    if len(studies) < 2:
        return out  # nothing to choose on
    for held in studies:
        safe = [s for s, per in scores.items() if all(per[o]["same_top3"] == 1.0 for o in studies if o != held)]
        pool = safe or list(scores)
        best = max(pool, key=lambda s: _geo([scores[s][o]["saving"] for o in studies if o != held]))
        out[held] = {"chosen": best, **scores[best][held]}
    return out


def _geo(xs) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def main(argv=None) -> dict:
    from ablate.core.config import EvalConfig, load_config

    p = common.base_parser(__doc__)
    p.add_argument("--studies", nargs="*", default=[], help="more study configs with trained pools")
    p.add_argument("--seeds", type=int, default=10, help="window shuffles per eval set (--quick: 2)")
    p.add_argument("--no-large-eval", action="store_true", help="the bench study's own eval sets only")
    p.add_argument("--no-bench-study", action="store_true", help="only the --studies")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "ablate-bench-screen"))
    args = p.parse_args(argv)
    args.seeds = 2 if args.quick else args.seeds
    cache = Path(args.cache)
    cfgs = [] if args.no_bench_study else [common.open_study(args)[0]]
    if cfgs and not args.no_large_eval and not args.quick:
        cfgs = [with_large_evals(cfgs[0], cache / "bench-large-evals")]
    cfgs += [load_config(Path(c), None) for c in args.studies]
    tables = {c.name: window_table(c, cache) for c in cfgs}
    seq_len = {c.name: c.eval.seq_len for c in cfgs}
    ev_cfg = EvalConfig()  # the shipped defaults (a study's config file may pin older ones)
    grid = list(itertools.product(GRID_TOKENS, GRID_GROWTH))
    scores = {s: score_setting(tables, s, args.seeds, seq_len, ev_cfg) for s in grid}
    default = (ev_cfg.screen_tokens, ev_cfg.screen_growth)
    if default not in scores:
        scores[default] = score_setting(tables, default, args.seeds, seq_len, ev_cfg)
    result = {"benchmark": "screen", "seeds": args.seeds, "confidence": ev_cfg.screen_confidence,
              "keep": ev_cfg.screen_keep, "default": list(default),
              "studies": {n: {"mixtures": int(next(iter(t.values()))[0].shape[0]),
                              "eval_sets": {e: int(v[0].shape[1]) for e, v in t.items()}} for n, t in tables.items()},
              "default_scores": scores[default],
              "per_eval_set_default": per_eval_set(tables, default, seq_len, ev_cfg, args.seeds),
              # the default replayed in file order: what a prefix of the file (not a sample) does
              "per_eval_set_file_order": per_eval_set(tables, default, seq_len, ev_cfg, 1, shuffled=False),
              "leave_one_out": {k: {**v, "chosen": list(v["chosen"])} for k, v in leave_one_out(scores).items()},
              "grid": {f"{t}x{g}": per for (t, g), per in scores.items()}}
    common.emit(result, args.out)
    return result


def per_eval_set(tables: dict, setting: tuple[int, int], seq_len: dict, ev_cfg, seeds: int,
                 shuffled: bool = True) -> dict:
    """The default's same-top-3 share and saving per (study, eval set): where screening pays and where not."""
    out = {}
    for study, sets in tables.items():
        for name, (nll, pred) in sets.items():
            sub = score_setting({study: {name: (nll, pred)}}, setting, seeds, seq_len, ev_cfg, shuffled)[study]
            out[f"{study}/{name}"] = {**sub, "windows": int(nll.shape[1]), "mixtures": int(nll.shape[0])}
    return out


if __name__ == "__main__":
    main()
