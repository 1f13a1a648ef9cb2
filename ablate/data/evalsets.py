"""Eval sets from the user's own files, beside the held-out slices of corpus domains.

How to run:
    # in the study config (paths relative to the config file):
    eval_sets:
      paloma-c4: {path: heldout/c4.jsonl, text_field: text, max_bytes: 2000000}
      notes: notes.txt                       # shorthand: the whole file, field "text"
    ablate units split -c study.yaml         # adds them; every unit and member stays as it is
    ablate score-mixture fiction-00 bible-00 --eval paloma-c4 -c study.yaml
    ablate sql "SELECT unit_id, n_docs, contaminated_docs, source FROM units WHERE kind = 'eval'"

An eval file is read with `datasets` (JSONL/JSON/Parquet by its text field; a .txt file is
split into documents like a corpus file), capped at whole documents up to `max_bytes`,
tokenized with the study tokenizer and cached like the units (by content and tokenizer),
and stored as `eval/eval-<name>.npy` + sidecar: every command that takes an eval set
(`--eval`, `sweep`, `search --target`, the views, the report) sees it like any other.

Contamination: every eval set's sidecar and `units` row count the documents whose exact
text (sha256) is also a document inside a training unit. Held-out corpus slices are split
by document, so theirs count duplicated documents within the corpus.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ablate.core.errors import UsageError, split_names, unknown_name
from ablate.store.pool import Pool, read_json


def doc_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_eval_file(name: str, spec) -> tuple[list[str], str]:
    """(documents, sha256 of the file) of eval set `name` (an ablate.core.config.EvalFileConfig)."""
    from ablate.data.corpus import read_documents

    path = Path(spec.path)
    try:
        docs = read_documents(path, spec.text_field, spec.format)
    except UsageError as exc:
        raise UsageError(f"eval set {name!r}: {exc}") from None
    if not docs:
        raise UsageError(f"eval set {name!r}: {path} has no non-empty documents in field '{spec.text_field}'")
    if spec.max_bytes is not None:  # whole documents, in file order
        kept, total = [], 0
        for doc in docs:
            size = len(doc.encode("utf-8"))
            if kept and total + size > spec.max_bytes:
                break
            kept.append(doc)
            total += size
        docs = kept
    return docs, hashlib.sha256(path.read_bytes()).hexdigest()


_HASHES: dict[tuple, str] = {}  # (path, mtime, size) -> sha256: a sweep loads its eval sets once per worker step


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, as `units split` records it (source_sha256), cached by mtime and size."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _HASHES:
        _HASHES[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _HASHES[key]


def check_source(ev: dict, spec) -> None:
    """Refuse an eval set (text or task) whose file, as the config names it (`spec`), is gone or is not the file
    `units split` staged: the pool holds the old file's tokens, and they would be scored without a word. Corpus
    slices and eval sets the config does not name have only the pool's copy, nothing to compare."""
    if spec is None or not ev.get("source_sha256"):
        return
    name, path = ev["domain"], Path(spec.path)
    if not path.is_file():
        raise UsageError(f"eval set {name!r}: {path} is missing, the file units split staged it from: restore it, "
                         f"or drop eval_sets.{name} from the config to use the staged copy")
    if file_sha256(path) != ev["source_sha256"]:  # the CLI adds the user's -c and --set to the command
        raise UsageError(f"eval set {name!r}: {path} changed since units split staged it: run `ablate units split "
                         f"--force` to stage it again, or restore the file")


def unit_documents(train_docs: list[str], train_tokens: np.ndarray, n_unit_tokens: int, eos: int) -> list[str]:
    """The training documents with at least one token inside the domain's units (the first
    n_unit_tokens of the EOS-joined stream): document i ends at the i-th EOS."""
    n = int(np.count_nonzero(train_tokens[:n_unit_tokens] == eos))
    partial = n_unit_tokens > 0 and n < len(train_docs) and train_tokens[n_unit_tokens - 1] != eos
    return train_docs[:n + bool(partial)]


def count_contaminated(eval_docs: list[str], train_digests: set[str]) -> int:
    return sum(doc_digest(d) in train_digests for d in eval_docs)


def check_window(name: str, n_tokens: int, seq_len: int) -> None:
    if n_tokens < seq_len:
        raise UsageError(f"eval set {name!r} has {n_tokens} tokens, shorter than one eval window "
                         f"(eval.seq_len = {seq_len}): give it more text or lower eval.seq_len")


def eval_sets(pool: Pool, names: list[str] | None = None) -> list[dict]:
    """Sidecars of eval sets (all, or the named domains), in name order."""
    available = {p.stem.removeprefix("eval-"): p for p in sorted(pool.eval_dir.glob("eval-*.json"))}
    if not available:
        raise UsageError(f"no eval sets in {pool.root}: run `ablate units split` first")
    chosen = split_names(names) or sorted(available)  # `--eval a,b` as `--eval a --eval b`
    out = []
    for name in chosen:
        if name not in available:
            raise unknown_name("eval set", name, available)
        out.append(read_json(available[name], "eval sidecar"))
    return out


def task_sidecars(pool: Pool) -> dict[str, dict]:
    """{name: sidecar} of the pool's task eval sets (ablate/data/tasks.py); {} when it has none, or no eval sets."""
    sidecars = (read_json(p, "eval sidecar") for p in sorted(pool.eval_dir.glob("eval-*.json")))
    return {meta["domain"]: meta for meta in sidecars if meta.get("task")}


def load_eval_tokens(pool: Pool, meta: dict) -> np.ndarray:
    return np.load(pool.root / meta["path"])
