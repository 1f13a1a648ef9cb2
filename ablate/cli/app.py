"""The `ablate` command line: thin wrappers over one library function per stage.

The whole pipeline, in order (each step reuses what exists):
    ablate corpus build debian --out data/corpus   # data/corpus.py build_debian_corpus
    ablate units split                             # data/units.py split_units
    ablate seed                                    # train/seed.py make_seed (train_seed / import_seed)
    ablate train-partition UNIT                    # train/loop.py train_member (one unit)
    ablate train-mixture UNIT UNIT...              # train/loop.py train_member (union baseline)
    ablate score-mixture UNIT UNIT...              # workflows/steps.py score_mixture -> scoring/score.py
    ablate sweep                                   # workflows/steps.py run_sweep -> scoring/sweep.py
    ablate sql "SELECT * FROM proxy_fidelity"      # store/index.py Index.query (read-only)
    ablate report                                  # fidelity/report.py write_report
    ablate demo                                    # workflows/demo.py: all of the above on configs/demo.yaml

Every command of a study takes `-c/--config FILE` and `--set key=value` (repeatable); those that build,
train, score or search also `--dry-run` (print the resolved config and stop). Errors print one line and exit
1 (runtime) or 2 (usage); set ABLATE_DEBUG=1 for a traceback.

This module is the table of commands (litgpt's __main__.py) and the error handling; each
command is a function in cli/build.py, score.py, proxy.py, pool.py or optimize.py, whose signature
is its options; what they share (-c, --set, --dry-run, --force, the study, printing rows) is
declared once in cli/shared.py. The pipelines the commands call are in ablate/workflows/.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

import typer

from ablate.cli import build as cli_build
from ablate.cli import optimize as cli_optimize
from ablate.cli import pool as cli_pool
from ablate.cli import proxy as cli_proxy
from ablate.cli import score as cli_score
from ablate.cli.shared import Invocation, with_invocation
from ablate.core.errors import AblateError, Interrupted

# The command groups (`ablate pool ls`): name -> help.
GROUPS = {
    "pool": "Inspect and repair the pool.",
    "units": "Base units and eval sets.",
    "corpus": "Build or inspect corpora.",
    "config": "Study configs.",
}

# Every command: its name (with a space: a group's subcommand) -> the function whose signature is its CLI.
# `ablate --help` lists them in this order, then the groups.
COMMANDS: dict[str, Callable] = {
    "config show": cli_build.config_show,
    "corpus build": cli_build.corpus_build,
    "units split": cli_build.units_split,
    "units ls": cli_build.units_ls,
    "seed": cli_build.seed,
    "train-partition": cli_build.train_partition,
    "train-mixture": cli_build.train_mixture,
    "score-mixture": cli_score.score_mixture_cmd,
    "export-mixture": cli_score.export_mixture_cmd,
    "sweep": cli_score.sweep,
    "sql": cli_pool.sql,
    "pool ls": cli_pool.pool_ls,
    "pool verify": cli_pool.pool_verify,
    "pool reindex": cli_pool.pool_reindex,
    "report": cli_pool.report,
    "demo": cli_build.demo,
    "import-gguf": cli_build.import_gguf_cmd,
    "calibrate": cli_proxy.calibrate,
    "suggest-unions": cli_proxy.suggest_unions_cmd,
    "fidelity": cli_proxy.fidelity_cmd,
    "search": cli_score.search,
    "optimize": cli_optimize.optimize,
}


def build_app() -> typer.Typer:
    """The typer app: the groups, then every command of the table on the app or its group."""
    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                      help="Simulate data ablations by training one model per data unit and averaging them.")
    groups = {name: typer.Typer(no_args_is_help=True, help=text) for name, text in GROUPS.items()}
    for name, group in groups.items():
        app.add_typer(group, name=name)
    for name, fn in COMMANDS.items():
        group, _, command = name.rpartition(" ")
        # a command may bring its own click command class (`typer_cls`: cli/optimize.py's, for `--validate [K]`)
        (groups[group] if group else app).command(command, cls=getattr(fn, "typer_cls", None))(fn)
    return app


app = build_app()


def _click_exceptions():
    """Typer ≥ 0.2x vendors its own click; older ones use click itself."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def main() -> None:
    click = _click_exceptions()
    if len(sys.argv) == 1:
        sys.argv.append("--help")
    invocation = Invocation()  # this run's: the command fills it (open_study), the hints below read it
    try:
        rv = app(standalone_mode=False, obj=invocation)
        sys.exit(rv if isinstance(rv, int) else 0)
    except AblateError as exc:
        _die(with_invocation(str(exc), invocation), exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        _die("aborted", 130)
    except click.ClickException as exc:
        _die(exc.format_message(), 2)
    except OSError as exc:  # disk full, permission denied, ...: name the file
        where = f": {exc.filename}" if exc.filename else ""
        _die(f"{exc.strerror or exc}{where}", 1)
    except KeyboardInterrupt:
        _die("interrupted; rerun the same command to resume", 130)
    except Exception as exc:  # a bug: still one line, unless asked for the traceback
        if isinstance(exc, Interrupted):
            _die(str(exc), 130)
        if os.environ.get("ABLATE_DEBUG"):
            raise
        _die(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
             f"(set ABLATE_DEBUG=1 for a traceback)", 1)


def _die(msg: str, code: int) -> None:
    print(f"error: {' '.join(msg.split())}", file=sys.stderr)
    sys.exit(code)
