"""Which mixtures a sweep scores when all 2^n are too many: a size range, a sample, a file.

How to run:
    ablate sweep --sample 200 --sizes 2-4 --seed 1   # 200 distinct random mixtures of 2 to 4 units
    ablate sweep --max-size 2                        # every single and pair, however many units
    ablate sweep --sizes 3-3                         # every mixture of exactly 3 units
    ablate sweep --mixtures mixtures.txt             # the mixtures listed in a file

Full enumeration is refused above 2^20 - 1 mixtures (every subset of 20 units); a size range
(`--max-size`, `--sizes`) counts only its mixtures, so `--max-size 2` works with 64 units.

`--sample N` draws N distinct mixtures, every mixture whose size is in `--sizes A-B`
(default 1-n) equally likely, so sizes follow the combinatorial mass of the range (narrow
`--sizes` to target a size). N distinct integers are drawn from [0, count) by Floyd's
algorithm (no rejection, no list of 2^n) and each is unranked into a size and a
combination through the combinatorial number system. The same seed gives the same
mixtures. Masks are sorted by Gray-code rank, the order a full sweep walks, so neighbours
share most members and the running sum moves little between them.

A mixtures file holds one mixture per line, written as `ablate score-mixture` takes it:
units separated by spaces, `a+b` a macro group (a merge of merges), and optionally
`--weights 3,1` (one weight per item, normalized). `#` starts a comment, blank lines and
repeated mixtures are skipped:

    fiction-00 bible-00                  # uniform: scored by the sweep's running sum
    fiction-00+bible-00 pydocs-00        # macro group: merged like score-mixture does
    fiction-00 bible-00 --weights 3,1    # weighted: the same

The whole file is checked (syntax, units known to the pool, weights) before anything is
scored; an error names the file and line. Rows are those `score-mixture` writes.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ablate.core.energy import Meter
from ablate.core.errors import UsageError, unknown_name
from ablate.core.textfile import read_text
from ablate.scoring.inplace import merged_model
from ablate.scoring.merge import gray_code_order, merge_id, parse_mixture
from ablate.scoring.score import evaluate_rows
from ablate.store.results import attach_cost, row_id, write_rows

MAX_ENUMERATED = 2 ** 20 - 1  # every subset of 20 units: the most a sweep enumerates


# -- sizes, enumeration, sampling --------------------------------------------------------
def parse_sizes(raw: str | None, n: int, max_size: int | None = None) -> tuple[int, int]:
    """`--sizes A-B` (or `A`) → (A, B) with 1 ≤ A ≤ B ≤ n; absent: 1..max_size (or n)."""
    if raw is None:
        return 1, min(max_size or n, n)
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", raw)
    if not m:
        raise UsageError(f"--sizes must be A-B (e.g. 2-4) or A, got {raw!r}")
    lo, hi = int(m[1]), int(m[2] or m[1])
    if not 1 <= lo <= hi <= n:
        raise UsageError(f"--sizes {raw}: need 1 <= A <= B <= {n} (the number of units)")
    return lo, hi


def count_mixtures(n: int, lo: int, hi: int) -> int:
    return sum(math.comb(n, k) for k in range(lo, hi + 1))


def gray_rank(mask: int) -> int:
    """The mask's position in gray_code_order (+1): the inverse Gray code."""
    rank = mask
    while mask:
        mask >>= 1
        rank ^= mask
    return rank


def enumerate_masks(n: int, lo: int, hi: int) -> list[int]:
    """Every mixture of lo..hi units in Gray-code order, without walking 2^n masks for large n."""
    if n <= 20:  # the sweep's historical order, built directly
        return [m for m in gray_code_order(n) if lo <= bin(m).count("1") <= hi]
    masks = [sum(1 << i for i in combo) for k in range(lo, hi + 1) for combo in itertools.combinations(range(n), k)]
    return sorted(masks, key=gray_rank)


def _unrank(index: int, n: int, lo: int, hi: int) -> int:
    """The index-th mixture of lo..hi units (by size, then lexicographic) as a bitmask."""
    k = lo
    while index >= math.comb(n, k):
        index -= math.comb(n, k)
        k += 1
    mask, x = 0, 0
    for i in range(k):  # combinatorial number system: skip the combinations that start lower
        while index >= (c := math.comb(n - x - 1, k - i - 1)):
            index -= c
            x += 1
        mask |= 1 << x
        x += 1
    return mask


def sample_masks(n: int, count: int, lo: int, hi: int, seed: int) -> list[int]:
    """`count` distinct mixtures of lo..hi units, uniformly at random, in Gray-code order."""
    total = count_mixtures(n, lo, hi)
    if count < 1:
        raise UsageError("--sample must be at least 1")
    if count > total:
        raise UsageError(f"--sample {count} is more than the {total} mixtures of {lo}-{hi} units that {n} units "
                         f"make: ask for at most {total} or widen --sizes")
    rng = random.Random(seed)
    chosen: set[int] = set()
    for j in range(total - count, total):  # Floyd: a uniform subset in `count` draws
        t = rng.randrange(j + 1)
        chosen.add(j if t in chosen else t)
    return sorted((_unrank(i, n, lo, hi) for i in chosen), key=gray_rank)


def plan_masks(n: int, *, max_size: int | None = None, sizes: str | None = None, sample: int | None = None,
               seed: int | None = None) -> list[int]:
    """The sweep's masks over n units: all of a size range, or a seeded sample of it."""
    if max_size is not None and max_size < 1:
        raise UsageError("--max-size must be at least 1")
    if sizes is not None and max_size is not None:
        raise UsageError("give --sizes A-B or --max-size K, not both")
    if seed is not None and sample is None:
        raise UsageError("--seed S goes with --sample N")
    lo, hi = parse_sizes(sizes, n, max_size)
    if sample is not None:
        return sample_masks(n, sample, lo, hi, seed or 0)
    total = count_mixtures(n, lo, hi)
    if total > MAX_ENUMERATED:
        what = "mixtures" if (lo, hi) == (1, n) else f"mixtures of {lo}-{hi} units"
        raise UsageError(f"{n} units make {total} {what}, too many to enumerate (at most {MAX_ENUMERATED}): "
                         f"pass --sample N [--sizes A-B], a smaller --max-size K, or --mixtures FILE")
    return enumerate_masks(n, lo, hi)


# -- mixtures files ------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One line of a mixtures file: sorted units, their normalized weights, a readable spec."""

    units: tuple[str, ...]
    weights: tuple[float, ...]
    spec: str
    plain: bool  # units only (no group, no weights): a uniform mixture the running sum can score
    line: int


LINE_SYNTAX = "a line is UNIT [UNIT or UNIT+UNIT ...] [--weights W,W,...]"


def parse_line(line: str, line_no: int = 0) -> Entry:
    items, weights = [], None
    tokens = line.split()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok == "--weights" or tok.startswith("--weights="):
            if weights is not None:
                raise UsageError("--weights given twice")
            weights = tok.partition("=")[2] if "=" in tok else (tokens[i + 1] if i + 1 < len(tokens) else "")
            i += 1 if "=" in tok else 2
            if not weights:
                raise UsageError("--weights needs a value, e.g. --weights 3,1")
            continue
        if tok.startswith("-"):
            raise UsageError(f"unknown option {tok!r}: {LINE_SYNTAX}")
        items.append(tok)
        i += 1
    units, w, spec = parse_mixture(items, weights)
    return Entry(tuple(units), tuple(w), spec, weights is None and all("+" not in x for x in items), line_no)


def read_mixtures(path: Path, known: list[str]) -> list[Entry]:
    """Every mixture of the file, checked against the pool's units, before anything is scored."""
    path = Path(path)
    try:
        text = read_text(path)
    except FileNotFoundError:
        raise UsageError(f"--mixtures {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--mixtures {path} is a directory, not a file") from None
    except UsageError as exc:  # not UTF-8
        raise UsageError(f"--mixtures {exc}") from None
    except OSError as exc:
        raise UsageError(f"--mixtures {path}: cannot read it ({exc.strerror})") from None
    known_set, entries, seen = set(known), [], set()
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()  # unit ids never hold '#' (pool.check_name)
        if not line:
            continue
        try:
            entry = parse_line(line, no)
        except UsageError as exc:
            raise UsageError(f"{path}:{no}: {exc}") from None
        unknown = [u for u in entry.units if u not in known_set]
        if unknown:
            raise unknown_name("unit", unknown[0], known, where=f"{path}:{no}: ")
        key = (entry.units, tuple(round(w, 12) for w in entry.weights))
        if key not in seen:
            seen.add(key)
            entries.append(entry)
    if not entries:
        raise UsageError(f"--mixtures {path} lists no mixture ({LINE_SYNTAX})")
    return entries


def score_entries(study, entries: list[Entry], done: set[str], chunk: int = 16, on_rows=None) -> int:
    """Merged rows of weighted or macro mixtures, one merge each (score-mixture's path).

    Rows are written every `chunk` mixtures, so an interrupted run keeps what it finished;
    returns the number of mixtures scored."""
    cfg, pool = study.cfg, study.pool
    todo = []
    for e in entries:
        mid = merge_id([study.unit_member(u) for u in e.units], list(e.weights))
        if not all(row_id("merged", mid, ev, cfg.eval.seq_len) in done for ev in study.evals):
            todo.append((e, mid))
    model = None  # built by the first merge, overwritten by each next one
    for start in range(0, len(todo), chunk):
        rows = []
        with Meter(cfg.energy) as meter:
            for e, mid in todo[start:start + chunk]:
                t0 = time.perf_counter()
                model = merged_model(pool, study.seed["model_id"], [study.unit_member(u) for u in e.units],
                                     list(e.weights), full_hash=cfg.verify_hash, device=study.device, model=model)
                rows += evaluate_rows(study, model, method="merged", mixture=list(e.units), weights=list(e.weights),
                                      model_id=mid, merge_s=time.perf_counter() - t0, skip=done, spec=e.spec)
        attach_cost(rows, meter.result)
        write_rows(pool, rows)
        if on_rows:
            on_rows(len(todo[start:start + chunk]))
    return len(todo)
