"""FIDELITY.md is written by several commands, each owning one `## ` section; this keeps them apart.

How to run (from Python):
    lines = markdown_table(["eval set", "n"], [["fiction", 11]])               # "| eval set | n |", "|---|---|", ...
    replace_section(Path("FIDELITY.md"), "## Fidelity vs unit length", text)   # replaces it, or appends it
    kept = own_sections(old_text)                                              # what a full rewrite keeps

The ranking protocol (`make fidelity`) rewrites the whole file; the sections other commands own
(`OWNED_HEADINGS`: unit lengths, studies reported on their own such as the real seed's, the optimized
mixtures retrained) survive that rewrite, because they are slow to regenerate (hours on a CPU) and have
their own command: `--unit-steps`, `--section`, `--weights-only`; `--rankings-only` rescores the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ablate.store.pool import atomic_write_bytes

LENGTHS_HEADING = "## Fidelity vs unit length"
STUDY_PREFIX = "## Study: "  # a study reported on its own (`ablate fidelity CONFIG --section`)
WEIGHTS_HEADING = "## Optimized mixtures, retrained (equal compute)"  # `ablate fidelity --weights-only`
OWNED_HEADINGS = (LENGTHS_HEADING, STUDY_PREFIX, WEIGHTS_HEADING)


def markdown_table(header: list[str], rows: Iterable[Iterable]) -> list[str]:
    """The lines of a markdown table: the header, its rule, then one line per row (each cell as str() writes it)."""
    return [_table_line(header), "|" + "---|" * len(header)] + [_table_line(row) for row in rows]


def _table_line(cells: Iterable) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _split(text: str) -> list[str]:
    """The text before the first `## ` heading, then one string per `## ` section (heading included)."""
    parts, current = [], []
    for line in text.splitlines(keepends=True):
        if line.startswith("## ") and current:
            parts.append("".join(current))
            current = []
        current.append(line)
    if current:
        parts.append("".join(current))
    return parts


def replace_section(path: Path, heading: str, new: str) -> None:
    """Put `new` (starting with its heading line) where the section whose heading starts with `heading` was,
    or at the end; the rest of the file is untouched. Atomic: a crash leaves the old file."""
    path = Path(path)
    parts = _split(path.read_text()) if path.exists() else []
    block = new.rstrip("\n") + "\n\n"
    hits = [i for i, p in enumerate(parts) if p.startswith(heading)]
    if hits:
        parts[hits[0]] = block
        parts = [p for i, p in enumerate(parts) if i not in hits[1:]]
    else:
        if parts:
            parts[-1] = parts[-1].rstrip("\n") + "\n\n\n"
        parts.append(block)
    atomic_write_bytes(path, "".join(parts).encode())


def own_sections(text: str) -> str:
    """The sections of an existing FIDELITY.md that other commands own (empty if none)."""
    return "".join(p.rstrip("\n") + "\n\n" for p in _split(text) if p.startswith(OWNED_HEADINGS))
