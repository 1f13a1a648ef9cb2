"""What every `ablate` command shares: its options, the study it runs on, how it prints rows.

How to run: not directly; the command modules (cli/build, score, proxy, pool, optimize) import
it, and `ablate --help` (ablate/cli/app.py) lists their commands. One declaration each:
    ConfigOpt, SetOpt, DryOpt, ForceOpt    # -c/--config FILE, --set key=value, --dry-run, --force
    open_study(config, set_, dry_run)      # the resolved config and its pool, checked against the pool's study
    with_invocation(message, inv)          # an error's hint, with the -c FILE and --set given (or the pool and config)
    print_rows(cols, rows)                 # a result table, no column truncated
    emit(cols, rows, fmt, out)             # table | csv | json | parquet, to stdout or a file
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.core.config import StudyConfig, load_config
from ablate.core.errors import UsageError
from ablate.core.progress import out as stdout
from ablate.store.pool import Pool
from ablate.store.study_record import check_pool_study

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="study YAML (default: the demo study)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override, e.g. train.lr=1e-4 (repeatable)")]
ScreenOpt = Annotated[bool, typer.Option(
    "--screen", help="race candidates on eval-set prefixes, evaluate only contenders in full (eval.screen_*)")]
DryOpt = Annotated[bool, typer.Option("--dry-run", help="print the resolved config and exit")]
ForceOpt = Annotated[bool, typer.Option("--force", help="redo the work even if a result exists")]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", help="comma-separated, one per unit (normalized)")]
TargetOpt = Annotated[Optional[list[str]], typer.Option(
    "--target", help="eval set(s) to optimize: comma list and/or repeated")]
TargetWeightsOpt = Annotated[Optional[str], typer.Option(
    "--target-weights", help="weights of the mean, one per target (e.g. 3,1), or `tokens`")]
ObjectiveOpt = Annotated[str, typer.Option("--objective", help="mean (default) or worst (largest change vs uniform)")]
MaxLossOpt = Annotated[Optional[list[str]], typer.Option(
    "--max-loss", help="EVAL:PCT, at most PCT % worse than the uniform mixture on EVAL (repeatable)")]
# the objective over eval sets (ablate/optimize/objectives.py): search, sweep --target and optimize share it
TruthOpt = Annotated[str, typer.Option("--truth", help="ground truth: unit (equal compute) or sum (add data, "
                                                       "k x budget)")]


@dataclass
class Invocation:
    """What the running command was started with: app.main makes one per run and hands it to the command through
    click's context (`obj`); open_study fills it and main reads it on an error. A hint that prints a command must
    repeat the user's -c FILE, or the user follows it into the default study. No module state: a second command in
    the same process (tests) starts from a fresh one."""
    flag: str | None = None  # the -c FILE typed
    label: str = ""  # how the config was chosen, for a hint without -c
    pool: str | None = None
    sets: list[str] = field(default_factory=list)  # the user's --set, not the flags a command turns into overrides


HINT = re.compile(r"`(ablate [^`]*)`")
DEFAULT_POOL = StudyConfig.model_fields["pool"].default


def current_invocation() -> Invocation | None:
    """The running command's Invocation (None outside app.main, e.g. a command called from a test's CliRunner)."""
    try:  # typer >= 0.2x vendors its own click; older ones use click itself
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context
    ctx = get_current_context(silent=True)
    return ctx.obj if ctx is not None and isinstance(ctx.obj, Invocation) else None


def open_study(config: Path | None, overrides: list[str] | None, dry_run: bool = False,
               check_study: bool = True, sets: list[str] | None = None) -> tuple[StudyConfig, Pool]:
    """The command's config (-c, else $ABLATE_CONFIG, else the demo's) and pool; --dry-run prints it and exits.
    `sets`: the user's --set when `overrides` also holds the command's own flags (hints repeat only the former)."""
    inv = current_invocation() or Invocation()
    inv.flag = str(config) if config is not None else None
    if config is None and os.environ.get("ABLATE_CONFIG"):
        config = Path(os.environ["ABLATE_CONFIG"])
    inv.label = (f"$ABLATE_CONFIG={config}" if inv.flag is None and config else
                 str(config) if config else "the embedded default config, no -c given")
    cfg = load_config(config, overrides)
    inv.pool = cfg.pool
    inv.sets = list(overrides or []) if sets is None else list(sets)
    if dry_run:
        typer.echo(cfg.to_yaml(), nl=False)
        raise typer.Exit(0)
    pool = Pool(cfg.pool)
    if check_study:  # a forgotten -c must not run the demo's settings on a user's pool
        check_pool_study(cfg, pool, str(config) if config else "the embedded default config (no -c given)")
    return cfg, pool


def with_invocation(message: str, inv: Invocation | None) -> str:
    """An error whose hint prints an `ablate ...` command, made to work as printed: with the -c FILE and every
    --set the user gave; without a -c, naming the pool and config it looked at and suggesting -c where the user's
    study is likely in a file (a YAML here, or the default pool)."""
    if inv is None or not inv.label or not HINT.search(message):  # no study opened yet: nothing to repeat
        return message
    flag = inv.flag

    def repeat(m: re.Match) -> str:  # the user's -c and every --set: a member trained without them is another one
        cmd = m.group(1)
        if flag is not None and " -c " not in cmd:
            cmd += f" -c {shlex.quote(flag)}"
        cmd += "".join(f" --set {shlex.quote(s)}" for s in inv.sets if f"--set {s}" not in cmd)
        return f"`{cmd}`"

    message = HINT.sub(repeat, message)
    if flag is not None or inv.pool is None:  # a -c given, or the config did not load (no pool to name)
        return message
    text = f"{message} (pool {Path(inv.pool).resolve()}, config: {inv.label})"
    if os.environ.get("ABLATE_CONFIG"):
        return text
    yamls = sorted(p.name for p in Path.cwd().glob("*.y*ml") if p.is_file())
    if yamls or inv.pool == DEFAULT_POOL:
        text += f"; if your study is in a config file, pass it: -c {yamls[0] if len(yamls) == 1 else 'FILE'}"
    return text


def say(msg: str) -> None:
    stdout.print(msg, markup=False)


def say_screen(screened: dict, dropped: int) -> None:
    """What `--screen` dropped and saved (sweep, search)."""
    used, whole = screened["eval_tokens"], screened["eval_tokens_unscreened"]
    say(f"screen {screened['screen_id']}: {dropped} (mixture, eval set) pairs dropped on a prefix "
        f"(table screened_perplexity); {used:,} eval tokens instead of {whole:,} ({whole / max(1, used):.1f}x fewer)")


def print_rows(cols: list[str], rows: list[dict]) -> None:
    emit(cols, [tuple(r.get(c) for c in cols) for r in rows], "table", None)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list):
        return ",".join(_fmt(x) for x in v)
    return "" if v is None else str(v)


@contextmanager
def _opened(out: Path | None, newline: str | None = None):
    """`out` opened for writing and closed after, or stdout (left open) when there is no file."""
    if out is None:
        yield sys.stdout
        return
    with open(out, "w", newline=newline) as fh:
        yield fh


def emit(cols: list[str], rows: list[tuple], fmt: str, out: Path | None) -> None:
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        cells = [[_fmt(v) for v in r] for r in rows]
        # every header and cell as plain Text: a value like `[bold]` or `[a,b]` is data, not console markup
        # (read as markup it would vanish from the table without a word)
        table = Table(show_lines=False)
        for c in cols:
            table.add_column(Text(c))
        for r in cells:
            table.add_row(*(Text(c) for c in r))
        # wide enough that no column is truncated: users copy these numbers
        width = sum(max([len(c)] + [len(r[i]) for r in cells]) + 3 for i, c in enumerate(cols)) + 1
        with _opened(out) as fh:
            Console(file=fh, width=max(80, width)).print(table)
    elif fmt == "csv":
        import csv

        with _opened(out, newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")  # not the csv module's CRLF: `$(ablate sql ...)` must not end in \r
            w.writerow(cols)
            w.writerows([[_fmt(v) if isinstance(v, list) else v for v in r] for r in rows])
    elif fmt == "json":
        text = json.dumps([dict(zip(cols, r)) for r in rows], default=str, indent=1)
        (Path(out).write_text(text) if out else typer.echo(text))
    elif fmt == "parquet":
        if out is None:
            raise UsageError("--format parquet needs --out FILE")
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)}), str(out))
    else:
        raise UsageError(f"unknown --format {fmt!r}: use table, csv, json or parquet")


def print_query(pool: Pool, sql: str, fmt: str, out: Path | None) -> None:
    from ablate.store.index import Index  # duckdb: loaded by the commands that query, not by `ablate --help`

    cols, rows = Index(pool).query(sql)
    emit(cols, rows, fmt, out)
