"""A fidelity study reported as its own section of FIDELITY.md (`ablate fidelity CONFIG --section`).

How to run:
    ablate fidelity configs/fidelity-real/smollm2-cpu.yaml --section --out FIDELITY.md   # make fidelity-real

For studies too slow to rerun with the protocol (the real pretrained seed: hours on a CPU) and too
different to pool with it (another model family and size): the same scoring (protocol.score_study),
rendered on its own: what was trained and why that size, the verdict of the raw merge against the
equal-compute truth with the noise floor, every proxy by calibration budget, the price tag with how its
energy was obtained, and how far the members moved from the seed.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from ablate.core.formats import fmt, yes_no
from ablate.fidelity.markdown import STUDY_PREFIX, markdown_table, replace_section
from ablate.fidelity.protocol import headline, said, summarize
from ablate.store.pool import Pool, atomic_write_bytes

GOAL_TOP1_SHARE, GOAL_SPEARMAN = 0.8, 0.9  # issue 23: top-1 on >= 4 of 5 eval sets, median Spearman >= 0.9


def _shown(path: str | None) -> str | None:
    """A path as the reader's checkout would have it (relative to the working directory when inside it)."""
    import os

    return path if not path or not path.startswith(os.getcwd() + os.sep) else os.path.relpath(path)


def make_target(source: str) -> str:
    """The Makefile target that regenerates a section ("`make X`; "), for the config folders that have one."""
    folder = Path(source).parent.name
    return f"`make {folder}`; " if folder in ("fidelity-real", "fidelity-heldout") else ""


def heading(result: dict) -> str:
    cfg = result["config"]
    return STUDY_PREFIX + (cfg["fidelity"].get("title") or result["study"])


def energy_methods(pool_path: str) -> str:
    """How the pool's energy numbers were obtained (measured counter or estimate, with its assumption),
    for training and for evaluation; formula rows (fitted proxies: no compute) are left out."""
    from ablate.store.index import Index

    index = Index(Pool(pool_path))
    said = []
    for stage, table in (("training", "models"), ("evaluation", "mixture_perplexity")):
        _, rows = index.query(f"SELECT DISTINCT energy_method FROM {table} WHERE energy_method IS NOT NULL "
                              "AND energy_method NOT LIKE 'none%' ORDER BY 1")
        if rows:
            said.append(f"{stage}: {'; '.join(r[0] for r in rows)}")
    return "; ".join(said) or "n/a"


def verdict(rows: list[dict]) -> list[str]:
    merged = [r for r in rows if r["proxy"] == "merged" and r["m"] == 0 and r["budget"] == "unit"]
    if not merged:
        return ["No equal-compute rows: nothing to judge."]
    return eval_only_lines(rows) + merged_verdict(merged)


# the proxies beside the raw merge in a section's headlines, with what each had (no union trained: m = 0)
BESIDE = {"ensemble": "no union", "features": "no union", "private": "no union",
          "short": "no union but a short one per mixture ranked (fidelity.short_unions of its tokens)",
          "polish": "no union but its merge polished per mixture ranked (fidelity.polish_unions of its steps)"}


def eval_only_lines(rows: list[dict]) -> list[str]:
    """The headlines of targets no unit covers, seed-known first: the raw merge, and beside it the ensemble,
    `features` (what `search` ranks new-to-the-seed targets by with no union), `private` (the merge with the drift a
    union keeps), `short` (short unions) and `polish` (polished merges), where the study trains them."""
    out = []
    for target, text in (("seed-known", "Seed-known targets (no unit of that domain; the seed knows it)"),
                         ("eval-only", "Eval-only targets new to the seed (no unit of that domain)")):
        def only(proxy):
            return [r for r in rows if r["proxy"] == proxy and r["m"] == 0 and r["budget"] == "unit"
                    and r.get("target") == target]

        if not only("merged"):
            continue
        beside = "".join(f"; `{p}`, {BESIDE[p]}: {said(summarize(only(p)))}" for p in BESIDE if only(p))
        out += [f"**{text}, raw merge:** {said(summarize(only('merged')))}{beside}.", ""]
    return out


def merged_verdict(merged: list[dict]) -> list[str]:
    s = summarize(merged)
    tasks = [r for r in merged if r.get("task")]
    split = [f"**Task targets (the correct answer's bits per byte; eval-only), raw merge:** {said(summarize(tasks))}.",
             ""] if tasks else []
    ok = s["top1"] >= GOAL_TOP1_SHARE * s["evals"] and s["median_spearman"] >= GOAL_SPEARMAN
    ok_noise = s["top1_noise"] >= GOAL_TOP1_SHARE * s["evals"] and s["median_spearman"] >= GOAL_SPEARMAN
    noise = [r["noise_sd"] for r in merged if r.get("noise_sd") is not None]
    return split + [f"**Verdict (raw uniform merge, no union trained, vs the equal-compute truth):** top-1 "
            f"{s['top1']}/{s['evals']} eval sets, {s['top1_noise']}/{s['evals']} within the noise floor; median "
            f"Spearman {fmt(s['median_spearman'])} (min {fmt(s['min_spearman'])}); worst regret "
            f"{fmt(s['worst_regret'], 2, True)}. Target (top-1 on ≥ 80 % of eval sets, median Spearman ≥ 0.9): "
            f"{'met' if ok else 'NOT met'} exactly; {'met' if ok_noise else 'NOT met'} counting picks within noise.",
            "",
            f"Noise floor: sd of log perplexity between replicate unions (same mixture, another data order), "
            f"median over eval sets {fmt(statistics.median(noise), 2, True) if noise else 'n/a (no replicates)'}; "
            "two mixtures closer than 2·√2·sd cannot be told apart by retraining."]


def section(result: dict, source: str, seconds: float, distance: dict) -> str:
    cfg, cost = result["config"], result["cost"]
    tr, un = cfg["train"], cfg["units"]
    steps = un["unit_tokens"] // (tr["batch_size"] * tr["seq_len"])
    methods = energy_methods(cfg["pool"])
    from ablate.store.index import Index

    _, seed = Index(Pool(cfg["pool"])).query("SELECT max(n_params) FROM models WHERE kind = 'seed'")
    lines = [heading(result), "",
             f"Regenerate: `ablate fidelity {source} --section --out docs/results/FIDELITY.md` ({make_target(source)}this "
             f"run: {seconds / 60:.1f} min, reusing what its pool held). Raw numbers: `FIDELITY-{result['study']}.json`. "
             "Not part of `make fidelity` and not pooled with its studies: the protocol's defaults were not chosen on "
             "it.", "",
             f"- Seed: `{_shown(cfg['seed']['import_path']) or 'trained here'}` ({seed[0][0] or 0:,} "
             f"parameters); units {', '.join(result['units'])} of {un['unit_tokens']:,} tokens = {steps} steps of "
             f"{tr['batch_size']} x {tr['seq_len']} at lr {tr['lr']:g} (cosine to {tr['min_lr_ratio']:g}x, "
             f"{tr['warmup_steps']} warmup), {tr['threads'] or 'shared'} torch thread(s); eval sets "
             f"{', '.join(result['eval_sets'])} ({un['eval_bytes']:,} bytes of held-out whole documents each, "
             f"windows of {cfg['eval']['seq_len']}); {result['n_truths']} ground-truth mixtures at equal compute.",
             f"- How far members moved from the seed (||θ − θ_seed|| / ||θ_seed||, median): units "
             f"{fmt(distance.get('unit'), 2, True)}, equal-compute unions {fmt(distance.get('union'), 2, True)}.",
             f"- Price tag (its pool, every stage): training {cost['train_s'] / 60:.1f} min, evaluation "
             f"{cost['eval_s'] / 60:.1f} min, {1000 * (cost['train_kwh'] + cost['eval_kwh']):.1f} Wh; energy: "
             f"{methods}.", ""]
    lines += verdict(result["rows"])
    for target, text in (("seed-known", "Seed-known targets (no unit of that domain; the seed knows it)"),
                         ("eval-only", "Eval-only targets new to the seed")):
        if any(r.get("target") == target for r in result["rows"]):
            lines += ["", f"{text}, every proxy, by calibration budget m (unions fitted on, the rest held out; best "
                      "first):", ""] + headline(result["rows"], "unit", target)
    lines += ["", "Targets a unit covers, every proxy, by m:", ""] + headline(result["rows"], "unit", "covered")
    lines += ["", "All targets, every proxy, by m:", ""] + headline(result["rows"], "unit")
    lines += ["", "Per eval set (m = 0):", ""] + markdown_table(
        ["proxy", "eval set", "Spearman", "top-1", "within noise", "regret", "noise sd"],
        ([r["proxy"], r["eval_set"], fmt(r["spearman"]), yes_no(r["top1"]), yes_no(r["top1_within_noise"]),
          fmt(r["regret"], 2, True), fmt(r.get("noise_sd"), 2, True)]
         for r in result["rows"] if r["m"] == 0 and r["budget"] == "unit"))
    return "\n".join(lines) + "\n"


def write_study_section(out: Path, result: dict, source: str, seconds: float) -> None:
    from ablate.fidelity.lengths import member_distances

    text = section(result, source, seconds, member_distances(result["config"]["pool"]))
    replace_section(out, heading(result), text)
    atomic_write_bytes(out.with_name(f"{out.stem}-{result['study']}.json"),
                       json.dumps(result, indent=1, default=str).encode())
