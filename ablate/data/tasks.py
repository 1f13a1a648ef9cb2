"""Task eval sets: multiple choice and cloze files, read, checked, tokenized and stored like eval sets.

How to run:
    # in the study config (docs/tasks.md has the format and the lm-eval-harness / OLMES conversion):
    eval_sets:
      fortune-ending: {path: tasks/fortune_ending.jsonl, kind: choice}
      headwords: {path: tasks/headwords.txt, kind: cloze}
    ablate units split -c study.yaml                      # checked, tokenized, cached, hashed
    ablate score-mixture fortunes-00 bible-00 --eval fortune-ending -c study.yaml

A `choice` file is JSONL, one example per line: {"context": str, "choices": [str, ...], "answer": int}
(+ optional "id", "category"). A `cloze` file is JSONL {"context", "continuation"} or text lines
`context<TAB>continuation`: one choice, so bits per byte only. Choices are scored as written, after the
context with no separator added (lm-eval's convention: the leading space belongs to the choice).

Each example's "window" is the correct continuation: its tokens are what the example predicts, from
EOS + context, so every command that ranks eval sets by per-window NLL sums ranks a task by the
answer's bits per byte with the same paired bootstrap. The other choices are kept for accuracy
(length-normalized log-likelihood, ablate/scoring/tasks.py).

On disk (this module alone knows it): `eval/eval-<name>.npy` holds every example's context tokens then
its choices' tokens, flat; `eval/eval-<name>.layout.npy` one row per choice: (example, context start,
context end, choice start, choice end, is answer). `data_sha256` hashes the tokenizer, both arrays.
Contamination: an example whose context + correct answer is exactly a training unit's document.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablate.core.errors import AblateError, UsageError
from ablate.core.textfile import decode_text
from ablate.store.pool import atomic_write_bytes

LAYOUT_COLUMNS = ("example", "ctx_start", "ctx_end", "choice_start", "choice_end", "is_answer")


@dataclass
class Example:
    context: str
    choices: list[str]
    answer: int
    id: str | None = None
    category: str | None = None
    line: int = 0  # in its file, for messages

    @property
    def document(self) -> str:
        """The example's text as a corpus would hold it: what contamination is counted on."""
        return self.context + self.choices[self.answer]


# -- reading and checking -------------------------------------------------------------------------
def read_task_file(name: str, spec) -> tuple[list[Example], str]:
    """(examples, sha256 of the file) of task eval set `name` (an EvalFileConfig with kind choice | cloze).
    Any bad line is one UsageError naming the eval set and file:line; nothing is returned half-read."""
    path = Path(spec.path)
    if not path.is_file():
        raise UsageError(f"eval set {name!r}: file not found: {path}")
    raw = path.read_bytes()
    try:
        lines = decode_text(raw, path).splitlines()  # a leading byte-order mark dropped (core/textfile.py)
    except UsageError as exc:
        raise UsageError(f"eval set {name!r}: {exc}") from None
    examples, total = [], 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ex = _parse_line(line, spec.kind, path.suffix == ".txt" or spec.format == "txt")
        except ValueError as exc:
            raise UsageError(f"eval set {name!r}: {path}:{n}: {exc}") from None
        total += len(ex.document.encode("utf-8"))
        if spec.max_bytes is not None and examples and total > spec.max_bytes:
            break  # whole examples, in file order
        ex.line = n
        examples.append(ex)
    if not examples:
        raise UsageError(f"eval set {name!r}: {path} has no examples")
    return examples, hashlib.sha256(raw).hexdigest()


def _parse_line(line: str, kind: str, tab_separated: bool) -> Example:
    if tab_separated:
        if kind != "cloze":
            raise ValueError("a .txt task file is cloze lines (context<TAB>continuation); multiple choice is JSONL")
        context, sep, cont = line.partition("\t")
        if not sep:
            raise ValueError("no TAB between the context and the continuation")
        return _checked(context, [cont], 0, None, None, "continuation")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if kind == "cloze":
        return _checked(_field(obj, "context"), [_field(obj, "continuation")], 0, obj.get("id"), obj.get("category"),
                        "continuation")
    choices, answer = _field(obj, "choices", list), _field(obj, "answer", int)
    if len(choices) < 2:
        raise ValueError(f"'choices' has {len(choices)} entr{'y' if len(choices) == 1 else 'ies'}: give 2 or more "
                         f"(one continuation is kind: cloze)")
    return _checked(_field(obj, "context"), choices, answer, obj.get("id"), obj.get("category"), "choices")


def _field(obj: dict, key: str, kind: type = str):
    if key not in obj:
        raise ValueError(f"missing field '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"'{key}' must be {'a string' if kind is str else 'a list' if kind is list else 'an integer'}, "
                         f"not {type(value).__name__}")
    return value


def _checked(context: str, choices: list, answer: int, ex_id, category, what: str) -> Example:
    bad = [i for i, c in enumerate(choices) if not isinstance(c, str) or not c.strip()]
    if bad:
        raise ValueError(f"{what} {bad[0]} is empty or not a string" if what == "choices" else "empty continuation")
    if not 0 <= answer < len(choices):
        raise ValueError(f"answer {answer} out of range (0..{len(choices) - 1})")
    if len(set(choices)) < len(choices):
        raise ValueError("two choices are the same text: accuracy could not tell them apart")
    return Example(context, list(choices), answer, None if ex_id is None else str(ex_id),
                   None if category is None else str(category))


# -- tokenizing -----------------------------------------------------------------------------------
def tokenize_task(name: str, path, examples: list[Example], tok, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat tokens, layout [n_choices, 6]) for the examples. The context starts with EOS (a document's start,
    as in the EOS-joined eval streams) and is cut from the left so that context + the longest choice fit
    one eval window of `seq_len`; a choice that cannot fit is refused."""
    eos = tok.eos_token_id
    dtype = np.uint16 if len(tok) <= 65535 else np.uint32
    ctx_ids = tok([e.context for e in examples], add_special_tokens=False)["input_ids"]
    flat_choices = tok([c for e in examples for c in e.choices], add_special_tokens=False)["input_ids"]
    parts, layout, at, c = [], [], 0, 0
    for i, ex in enumerate(examples):
        choices = flat_choices[c:c + len(ex.choices)]
        c += len(ex.choices)
        longest = max(len(x) for x in choices)
        if longest + 1 > seq_len:
            raise UsageError(f"eval set {name!r}: {path}:{ex.line}: a choice of {longest} tokens, more than one eval "
                             f"window (eval.seq_len = {seq_len}) holds after its context")
        if min(len(x) for x in choices) == 0:
            raise UsageError(f"eval set {name!r}: {path}:{ex.line}: a choice with no tokens")
        ctx = ([eos] + ctx_ids[i])[-(seq_len - longest):]
        parts.append(ctx)
        ctx_start, ctx_end = at, at + len(ctx)
        at = ctx_end
        for j, ids in enumerate(choices):
            parts.append(ids)
            layout.append((i, ctx_start, ctx_end, at, at + len(ids), int(j == ex.answer)))
            at += len(ids)
    tokens = np.fromiter((t for p in parts for t in p), dtype=dtype, count=at)
    return tokens, np.asarray(layout, dtype=np.int64).reshape(-1, len(LAYOUT_COLUMNS))


def tokenize_cached(name: str, spec, examples: list[Example], file_sha: str, tok, tok_id: str, seq_len: int,
                    cache_dir: Path, pending: list) -> tuple[np.ndarray, np.ndarray]:
    """tokenize_task, cached by (tokenizer, file, kind, cap, window) like the text eval sets' token caches; a miss
    appends its write to `pending` (run once the whole split is known to be valid)."""
    key = hashlib.sha256(f"{tok_id}:{file_sha}:{spec.kind}:{spec.max_bytes}:{seq_len}".encode()).hexdigest()[:24]
    path = cache_dir / "tokens" / f"task-{key}.npz"
    if path.exists():
        with np.load(path) as cached:
            return cached["tokens"], cached["layout"]
    tokens, layout = tokenize_task(name, spec.path, examples, tok, seq_len)
    buf = io.BytesIO()
    np.savez(buf, tokens=tokens, layout=layout)
    pending.append(lambda: atomic_write_bytes(path, buf.getvalue()))
    return tokens, layout


def task_sha256(tok_id: str, tokens: np.ndarray, layout: np.ndarray) -> str:
    return hashlib.sha256(f"{tok_id}:".encode() + tokens.tobytes() + layout.tobytes()).hexdigest()


def task_row(name: str, examples: list[Example], kind: str, tokens: np.ndarray, layout: np.ndarray,
             byte_len: np.ndarray, tok_id: str) -> dict:
    """The sidecar fields a task adds to an eval set's (units' `_row`): what it predicts per example."""
    ans = layout[layout[:, 5] == 1]
    answer_tokens = (ans[:, 4] - ans[:, 3]).tolist()
    answer_bytes = [int(byte_len[tokens[a:b]].sum()) for a, b in ans[:, 3:5]]
    categories = [e.category for e in examples]
    return {"task": kind, "n_examples": len(examples), "n_choices": int(len(layout)),
            "window_tokens": answer_tokens, "window_bytes": answer_bytes, "n_bytes": int(sum(answer_bytes)),
            "data_sha256": task_sha256(tok_id, tokens, layout), "layout": f"eval/eval-{name}.layout.npy",
            "ids": [e.id for e in examples] if any(e.id for e in examples) else None,
            "categories": categories if any(categories) else None}


def scored_tokens(ev: dict) -> int:
    """Tokens an eval set's sidecar says a model is scored on: a text set's stream, a task's answers (what a
    token-weighted objective weighs it by; the context is read, not scored)."""
    return int(sum(ev["window_tokens"])) if ev.get("task") else int(ev["n_tokens"])


# -- reading back ---------------------------------------------------------------------------------
@dataclass
class TaskSet:
    """A stored task, loaded: flat tokens, one layout row per choice, and per example its answer's row."""

    name: str
    tokens: np.ndarray
    layout: np.ndarray          # [n_choices, 6], LAYOUT_COLUMNS
    answer_bytes: np.ndarray    # [n_examples] UTF-8 bytes of the correct continuation
    choice_bytes: np.ndarray    # [n_choices] UTF-8 bytes of every choice (accuracy's length normalization)

    @property
    def n_examples(self) -> int:
        return int(self.layout[:, 0].max()) + 1

    @property
    def answers(self) -> np.ndarray:
        """Row of each example's correct choice in `layout`, in example order."""
        return np.flatnonzero(self.layout[:, 5] == 1)

    def sequence(self, row: int) -> tuple[np.ndarray, int]:
        """(context + choice tokens, length of the context) of one layout row."""
        _, a, b, c, d, _ = self.layout[row]
        return np.concatenate([self.tokens[a:b], self.tokens[c:d]]), int(b - a)

    def answer_windows(self, pad: int) -> tuple[np.ndarray, np.ndarray]:
        """([n, T] ids, [n, T-1] 0/1 mask of the positions that predict an answer token): each example's
        context + correct answer, right-padded with `pad` (causal attention: padding after the answer
        changes nothing before it), T the longest example."""
        seqs = [self.sequence(r) for r in self.answers]
        width = max(len(s) for s, _ in seqs)
        ids = np.full((len(seqs), width), pad, dtype=np.int64)
        mask = np.zeros((len(seqs), width - 1), dtype=np.float32)
        for i, (s, n_ctx) in enumerate(seqs):
            ids[i, :len(s)] = s
            mask[i, n_ctx - 1:len(s) - 1] = 1.0  # position t predicts token t + 1
        return ids, mask


def task_set(name: str, tokens: np.ndarray, layout: np.ndarray, byte_len: np.ndarray) -> TaskSet:
    """A TaskSet from tokenize_task's arrays (the bytes each choice stands for from the tokenizer's byte table)."""
    choice_bytes = np.array([int(byte_len[tokens[c:d]].sum()) for c, d in layout[:, 3:5]], dtype=np.int64)
    return TaskSet(name, tokens, layout, choice_bytes[layout[:, 5] == 1], choice_bytes)


def load_task(pool, meta: dict, byte_len: np.ndarray) -> TaskSet:
    tokens, layout = np.load(pool.root / meta["path"]), np.load(pool.root / meta["layout"])
    if task_sha256(meta["tokenizer_id"], tokens, layout) != meta["data_sha256"]:
        raise AblateError(f"task eval set {meta['domain']} ({meta['path']}) does not match its recorded sha256 "
                          f"(corrupted? run `ablate units split --force`)")
    return task_set(meta["domain"], tokens, layout, byte_len)
