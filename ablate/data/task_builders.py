"""Two real multiple-choice tasks built offline from Debian text, as examples of converting data into a task file.

How to run:
    python -m ablate.data.task_builders fortune-ending tasks/fortune_ending.jsonl        # 400 examples
    python -m ablate.data.task_builders webster-definition tasks/webster_def.jsonl 300   # needs dict-gcide
    # then, in the study config:  eval_sets: {fortune-ending: {path: tasks/fortune_ending.jsonl, kind: choice}}

Each line written is the task format of ablate/data/tasks.py, {"id", "context", "choices", "answer",
"category"}; docs/tasks.md shows the same conversion for lm-evaluation-harness and OLMES files.

- fortune-ending: a fortune (package fortunes / fortunes-min) is cut at a word boundary near 60 % of its
  words; the true ending is one choice, the endings of three other fortunes of similar length the others.
  A model that knows how quotes go (or memorized them: contamination counts it) prefers the true ending.
- webster-definition: a GCIDE (Webster 1913) headword with its part of speech; the choices are its first
  sense and the first senses of three other headwords of the same part of speech.
Distractors of similar length and the same kind keep length and form from giving the answer away. Output
is deterministic for a given package version and `seed`.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import sys
from pathlib import Path
from typing import Iterable

from ablate.core.errors import UsageError
from ablate.data.debian import DEBIAN_DOMAINS, FORTUNES, fortune_docs
from ablate.store.pool import atomic_write_bytes

N_CHOICES = 4


def fortune_ending(files: Iterable[Path] | None = None, n: int = 400, seed: int = 0, max_words: int = 80) -> list[dict]:
    """Examples from fortunes of 12 to `max_words` words (`files`: fortune files; default the fortunes-min three)."""
    files = list(files or [FORTUNES / name for name in ("fortunes", "literature", "riddles")])
    cut = []
    for path in files:
        if not path.is_file():
            raise UsageError(f"fortune file not found: {path} (apt-get install fortunes-min)")
        for _, locator, text in fortune_docs(path):
            words = text.split(" ")
            if 12 <= len(words) <= max_words:
                at = round(0.6 * len(words))
                cut.append((f"{path.name}#{locator}", " ".join(words[:at]), " " + " ".join(words[at:]), path.name))
    return _with_distractors(cut, n, seed)


_SENSE = re.compile(r"(?m)^(?:1\.\s+)?([A-Z][^\n\[]{14,})")


def webster_definition(n: int = 300, seed: int = 0, skip: int = 20_000, scan: int = 40_000) -> list[dict]:
    """Examples from GCIDE entries skip .. skip + scan whose header is `Headword, pos.` and which have a sense.
    Past the first 20,000 entries by default: the demo corpus keeps the first 4 MB of the dictionary (about
    17,000 entries), so a seed pretrained on it has not read these headwords."""
    items = []
    entries = DEBIAN_DOMAINS["webster"].extract({})  # the dictionary needs no cache
    for _, locator, text in itertools.islice(entries, skip, skip + scan):
        header, _, body = text.partition("\n")
        m = re.fullmatch(r"([A-Z][a-z-]+), ((?:[a-z]+\. ?)+)(?:\[.*)?", header.strip())
        if not m or "]" not in body and "[" in header:
            continue
        body = body.split("]", 1)[1] if "[" in header else body  # after a multi-line etymology
        body = re.sub(r"\n(?!\n|\d+\.)\s*", " ", body)  # a sense's wrapped lines joined (blank lines, numbers kept)
        sense = _SENSE.search(body)
        if not sense:
            continue
        first = re.split(r";|\.(?:\s|$)", sense.group(1))[0].strip()
        if 15 <= len(first) <= 120 and m.group(1).lower() not in first.lower():
            items.append((f"gcide#{m.group(1)}", f"{m.group(1)} ({m.group(2).strip()}):", f" {first}.", m.group(2).strip()))
    return _with_distractors(items, n, seed, same_category=True)


def _with_distractors(items: list[tuple[str, str, str, str]], n: int, seed: int,
                      same_category: bool = False) -> list[dict]:
    """(id, context, true ending, category) -> examples: three other items' endings of nearest length
    (of the same category when asked), the choices shuffled."""
    rng = random.Random(seed)
    chosen = rng.sample(items, min(n, len(items)))
    by_length = sorted(items, key=lambda it: len(it[2]))
    rank = {it[0]: i for i, it in enumerate(by_length)}
    out = []
    for ex_id, context, ending, category in chosen:
        i = rank[ex_id]
        near = [it for it in by_length[max(0, i - 40):i + 40]
                if it[0] != ex_id and it[2] != ending and (not same_category or it[3] == category)]
        pool = sorted({it[2] for it in near})
        if len(pool) < N_CHOICES - 1:
            continue
        choices = rng.sample(pool, N_CHOICES - 1) + [ending]
        rng.shuffle(choices)
        out.append({"id": ex_id, "context": context, "choices": choices, "answer": choices.index(ending),
                    "category": category})
    return out


BUILDERS = {"fortune-ending": fortune_ending, "webster-definition": webster_definition}


def write_task(examples: list[dict], out: Path) -> Path:
    atomic_write_bytes(Path(out), "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples).encode())
    return Path(out)


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3) or argv[0] not in BUILDERS:
        sys.exit(f"usage: python -m ablate.data.task_builders {{{'|'.join(BUILDERS)}}} OUT.jsonl [N]")
    examples = BUILDERS[argv[0]](n=int(argv[2])) if len(argv) == 3 else BUILDERS[argv[0]]()
    print(f"{write_task(examples, Path(argv[1]))}: {len(examples)} examples")


if __name__ == "__main__":
    main(sys.argv[1:])
