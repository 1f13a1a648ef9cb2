"""Errors that reach the user as one line on stderr.

`AblateError` is a runtime failure (exit 1); `UsageError` is bad input from the
command line or the config (exit 2). The CLI catches both and prints only the
message, so every message must name the thing that is wrong and, where there is
one, the fix. `Interrupted` is a training run stopped after its checkpoint (exit 130).
A name that is not among the known ones (an eval set, a unit, a target, a proxy) is refused by `unknown_name`:
the list, and the nearest name when one is close (`py_nextline` -> did you mean 'py-nextline'?). Lists of names
on the command line are comma lists and/or repeated options (`split_names`).
"""

from __future__ import annotations

import difflib
from typing import Iterable


class AblateError(Exception):
    exit_code = 1


class UsageError(AblateError):
    exit_code = 2


class Interrupted(Exception):
    """A training run stopped on purpose (Ctrl-C, a test's stop_after) after writing its checkpoint.

    Not an AblateError: nothing is wrong, and the CLI exits 130 so scripts can tell a stop
    from a failure; rerunning the same command resumes."""


def split_names(raw: Iterable[str] | str | None) -> list[str]:
    """`--eval a,b --eval c` -> [a, b, c] (empty pieces dropped: a trailing comma is not a name)."""
    items = [raw] if isinstance(raw, str) else raw or []
    return [p.strip() for item in items for p in item.split(",") if p.strip()]


def unknown_name(what: str, name: str, known: Iterable[str], where: str = "", show: int = 12) -> UsageError:
    """The refusal of `name`, not among `known`: "{where}unknown {what} 'x' (known: a, b); did you mean 'y'?"."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    shown = ", ".join(known[:show]) + (f", ... ({len(known)} in all)" if len(known) > show else "")
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UsageError(f"{where}unknown {what} {name!r} (known: {shown or 'none'}){hint}")
