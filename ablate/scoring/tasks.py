"""Scoring a task eval set: every choice's NLL in one forward pass per choice set, the answer's bits per byte,
accuracy by length-normalized log-likelihood.

How to run:
    ablate score-mixture fortunes-00 bible-00 --eval fortune-ending    # rows: bits/byte of the answer, accuracy
    ablate sql "SELECT method, eval_set, bits_per_byte, accuracy FROM task_accuracy"
    from ablate.scoring.tasks import evaluate_task
    stats = evaluate_task(model, study.tasks["fortune-ending"], batch_size=32)

The example is the task's "window": its NLL sum is the correct continuation's NLL given EOS + context, its
predicted tokens and bytes the answer's, so a row's nll_sum / n_bytes is the answer's bits per byte (OLMES
"rc" / Olmix's BPB metric), and rankings bootstrap examples as they bootstrap text windows. Accuracy picks
the choice with the lowest NLL per UTF-8 byte (lm-eval's acc_norm uses characters; bytes agree on ASCII and
are what bits per byte counts); a cloze task has one choice and no accuracy.

Batching: the choices of an example share its context, so they run as rows of one batch, whole examples of
similar length packed together up to `eval.batch_size` rows, right-padded (causal attention: padding after a
sequence changes nothing before it), and the LM head runs on the positions that predict a choice token only.
The plain loop over choices (`choice_nll_loop`, one forward per choice) is kept as the reference the bench
(bench/bench_tasks.py: 2.9x at the demo's size) and the tests compare against.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from ablate.data.tasks import TaskSet
from ablate.models.device import eval_precision, precision_context
from ablate.scoring.evaluate import evaluate_tokens, nll_stats
from ablate.scoring.losses import token_nll
from ablate.scoring.uncertainty import window_tokens
from ablate.store.results import task_correct


def example_rows(task: TaskSet) -> list[np.ndarray]:
    """Layout rows of each example (its choices), in example order."""
    return np.split(np.arange(len(task.layout)), np.flatnonzero(np.diff(task.layout[:, 0])) + 1)


def _packed(task: TaskSet, batch_size: int):
    """Lists of layout rows, whole examples each, about batch_size rows (one example may exceed it), examples
    taken by length so that a batch pads little (the sums land by row: the order is free)."""
    examples = example_rows(task)
    lengths = [int((task.layout[r, 2] - task.layout[r, 1] + task.layout[r, 4] - task.layout[r, 3]).max())
               for r in examples]
    batch: list[int] = []
    for e in np.argsort(lengths, kind="stable"):
        if batch and len(batch) + len(examples[e]) > batch_size:
            yield batch
            batch = []
        batch.extend(examples[e].tolist())
    if batch:
        yield batch


def _batch(task: TaskSet, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """([b, T] ids, right-padded; [b, T-1] bool: the positions that predict a choice token)."""
    seqs = [task.sequence(r) for r in rows]
    width = max(len(s) for s, _ in seqs)
    ids = torch.zeros((len(rows), width), dtype=torch.int64)
    sel = torch.zeros((len(rows), width - 1), dtype=torch.bool)
    for i, (seq, n_ctx) in enumerate(seqs):
        ids[i, :len(seq)] = torch.from_numpy(seq.astype(np.int64))
        sel[i, n_ctx - 1:len(seq) - 1] = True  # position t predicts token t + 1
    return ids, sel


def _head_of(model):
    """(body, head) when logits = head(body(x).last_hidden_state), else None (probed before it is trusted)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return (body, head) if isinstance(head, torch.nn.Linear) and body is not None else None


def _probed_split(model, ids: torch.Tensor, sel: torch.Tensor):
    """_head_of(model) if head(body(x)) gives the model's own losses on this row (logit scaling or soft-capping
    would not), else None: the full-logits path."""
    split = _head_of(model)
    if split is None:
        return None
    same = torch.allclose(_selected_nll(model, split, ids, sel), _selected_nll(model, None, ids, sel), rtol=1e-5,
                          atol=1e-6)
    return split if same else None


def _selected_nll(model, split, ids: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """NLL of every selected position's next token, row-major [N] float32. With `split` (body, head) the head
    runs on the selected positions only: a choice is a few tokens after a long context, and on a small model
    the LM head is most of the work (vocab x hidden per position)."""
    target = ids[:, 1:][sel]
    if split is None:
        logits = model(input_ids=ids).logits[:, :-1][sel]
    else:
        hidden = split[0](input_ids=ids, use_cache=False).last_hidden_state[:, :-1][sel]
        logits = split[1](hidden)
    return token_nll(logits, target)  # scoring/losses: the one per-token loss


@torch.inference_mode()
def choice_nll(model, task: TaskSet, batch_size: int, precision: str | None = None,
               per_token: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """(NLL sum of every choice given its context [n_choices] float64, per-token NLL of each example's answer
    (float32, per_token only)). One forward per batch of whole choice sets."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.zeros(len(task.layout), dtype=np.float64)
    answer_tokens: dict[int, np.ndarray] = {}
    with precision_context(device, eval_precision(device, precision)):
        split = _probed_split(model, *(t.to(device) for t in _batch(task, [0])))
        for rows in _packed(task, batch_size):
            ids, sel = (t.to(device) for t in _batch(task, rows))
            tok = _selected_nll(model, split, ids, sel).cpu()
            counts = sel.sum(1).cpu().tolist()
            for r, part in zip(rows, torch.split(tok, counts)):
                out[r] = float(part.double().sum())
                if per_token and task.layout[r, 5]:
                    answer_tokens[r] = part.numpy().astype(np.float32)
    model.train(was_training)
    return out, [answer_tokens[r] for r in task.answers] if per_token else []


@torch.inference_mode()
def choice_nll_loop(model, task: TaskSet) -> np.ndarray:
    """The same NLL sums, one forward per choice (what a user's loop does): the reference for choice_nll."""
    device = next(model.parameters()).device
    model.eval()
    out = np.zeros(len(task.layout), dtype=np.float64)
    for r in range(len(task.layout)):
        s, n_ctx = task.sequence(r)
        ids = torch.from_numpy(s.astype(np.int64))[None].to(device)
        # a user's own formula on purpose: the independent reference the packed path is checked against
        logp = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        out[r] = -float(logp[n_ctx - 1:].gather(1, ids[0, n_ctx:, None]).double().sum())
    return out


def correct_choices(task: TaskSet, nll: np.ndarray) -> np.ndarray | None:
    """Per example: does the lowest NLL per byte fall on the answer (length-normalized log-likelihood)?
    None for a cloze task (one choice each: nothing to choose)."""
    rows = example_rows(task)
    if all(len(r) == 1 for r in rows):
        return None
    per_byte = nll / np.maximum(task.choice_bytes, 1)
    return np.array([bool(task.layout[r[np.argmin(per_byte[r])], 5]) for r in rows])


def choice_tasks(study) -> list[str]:
    """The loaded study's task eval sets with choices (a cloze task has one per example: no accuracy)."""
    return [name for name, task in study.tasks.items() if len(task.layout) > task.n_examples]


def evaluate_task(model, task: TaskSet, *, batch_size: int, precision: str | None = None,
                  per_token: bool = False) -> dict:
    """evaluate_tokens' dict for a task (the answers' sums, one "window" per example), plus `choice_nll`
    (every choice, layout order) and `correct` (per example; absent for cloze); `token_nll` with per_token."""
    t0 = time.perf_counter()
    nll, tokens = choice_nll(model, task, batch_size, precision, per_token)
    answers = nll[task.answers]
    n_pred = int((task.layout[task.answers, 4] - task.layout[task.answers, 3]).sum())
    stats = nll_stats(float(answers.sum()), n_pred, int(task.answer_bytes.sum()), time.perf_counter() - t0, answers)
    stats["choice_nll"] = [float(x) for x in nll]
    correct = correct_choices(task, nll)
    if correct is not None:
        stats["correct"] = [bool(x) for x in correct]
    if per_token:
        stats["token_nll"] = np.concatenate(tokens)
    return stats


def evaluate_eval_set(model, study, ev: dict, per_token: bool = False) -> dict:
    """One eval set of a loaded study, text or task: the one place that tells them apart when measuring."""
    cfg, name = study.cfg, ev["domain"]
    if name in study.tasks:
        return evaluate_task(model, study.tasks[name], batch_size=cfg.eval.batch_size, precision=study.precision,
                             per_token=per_token)
    return evaluate_tokens(model, study.eval_tokens[name], study.byte_len, seq_len=cfg.eval.seq_len,
                           batch_size=cfg.eval.batch_size, name=f"eval set {name}", precision=study.precision,
                           per_token=per_token)


def accuracy_interval(correct: np.ndarray, resamples: int, seed: int, confidence: float = 0.95) -> tuple:
    """(accuracy, low, high): the share of examples answered right and its bootstrap interval over examples
    (the same resampling unit as the answer's bits per byte)."""
    correct = np.asarray(correct, dtype=np.float64)
    if not resamples:
        return float(correct.mean()), None, None
    rng = np.random.default_rng(seed)
    draws = correct[rng.integers(0, len(correct), (resamples, len(correct)))].mean(1)
    low, high = np.percentile(draws, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(correct.mean()), float(low), float(high)


def describe_accuracy(acc: float | None, low: float | None, high: float | None) -> str:
    """`42.0% [30.0, 55.0]`, or "-" for a row without choices (text, cloze, a sweep's)."""
    if acc is None:
        return "-"
    return f"{acc:.1%}" if low is None else f"{acc:.1%} [{100 * low:.1f}, {100 * high:.1f}]"


def attach_accuracy(pool, rows: list[dict], resamples: int, seed: int) -> None:
    """Each row (dicts with row_id) measured on a task with choices gets `accuracy` (describe_accuracy's text)."""
    correct = task_correct(pool, [r["row_id"] for r in rows])
    for r in rows:
        got = correct.get(r["row_id"])
        r["accuracy"] = describe_accuracy(*accuracy_interval(got, resamples, seed)) if got is not None else "-"


def predicted_per_window(ev: dict, seq_len: int) -> np.ndarray:
    """Predicted tokens per window of an eval set (its sidecar): a text stream's windows, or a task's answers."""
    if ev.get("task"):
        return np.asarray(ev["window_tokens"], dtype=np.int64)
    return window_tokens(int(ev["n_tokens"]), seq_len)
