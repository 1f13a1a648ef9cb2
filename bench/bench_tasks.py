"""Benchmark 13: scoring a multiple-choice task, one forward pass per choice set vs a plain loop over choices.

How to run:
    .venv/bin/python bench/bench_tasks.py [--quick] [--study DIR] [--examples 200] [--out FILE]

In one run, on a fortune-ending task (ablate/data/task_builders.py, 4 choices per example) tokenized with the bench
study's tokenizer, one trained unit member scores every choice's NLL two ways, interleaved per round (medians):
  packed  scoring.tasks.choice_nll: the choices of an example as rows of one batch, whole examples packed up to
          eval.batch_size rows, logits only from the shortest context on (what score-mixture runs);
  loop    scoring.tasks.choice_nll_loop: one forward per choice, what a user's loop over choices does.
Both must give the same NLL sums (1e-4 relative). Reported: examples/s each and the ratio (goal >= 2x).
"""

from __future__ import annotations

import numpy as np

import common


def main(argv=None) -> dict:
    p = common.base_parser(__doc__)
    p.add_argument("--examples", type=int, default=200, help="examples in the task")
    args = p.parse_args(argv)
    import torch

    from ablate.data.task_builders import fortune_ending
    from ablate.data.tasks import Example, task_set, tokenize_task
    from ablate.data.units import load_tokenizer, study_tokenizer
    from ablate.scoring.tasks import choice_nll, choice_nll_loop, correct_choices

    cfg, pool, study = common.open_study(args)
    seq_len, bs = cfg.eval.seq_len, cfg.eval.batch_size
    n = 20 if args.quick else args.examples
    raw = fortune_ending(n=n, max_words=25 if seq_len < 128 else 60)
    examples = [Example(e["context"], e["choices"], e["answer"]) for e in raw]
    tokens, layout = tokenize_task("fortune-ending", "fortune-ending", examples,
                                   load_tokenizer(study_tokenizer(pool)[0]), seq_len)
    task = task_set("fortune-ending", tokens, layout, study.byte_len)
    model = common.first_member(cfg, pool, study)
    methods = {"packed": lambda: choice_nll(model, task, bs)[0], "loop": lambda: choice_nll_loop(model, task)}
    out = {k: f() for k, f in methods.items()}  # warm-up, and the equality check
    same = bool(np.allclose(out["packed"], out["loop"], rtol=1e-4))
    times = common.interleave(methods, 1 if args.quick else 7, args.budget or 60)
    med = {k: common.median(v) for k, v in times.items()}
    result = {"benchmark": "tasks", "threads": torch.get_num_threads(), "examples": len(examples),
              "choices": int(len(layout)), "batch_rows": bs, "choice_tokens": int((layout[:, 4] - layout[:, 3]).sum()),
              "seconds": med, "runs_s": times, "examples_per_s": {k: len(examples) / v for k, v in med.items()},
              "ratio": common.paired_ratio(times["loop"], times["packed"]), "goal_ratio": 2.0, "same_nll": same,
              "accuracy": float(correct_choices(task, out["packed"]).mean())}
    common.emit(result, args.out)
    return result


if __name__ == "__main__":
    main()
