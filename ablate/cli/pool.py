"""Commands that read or repair the pool: sql, pool ls / verify / reindex, report.

How to run:
    ablate sql "SELECT * FROM proxy_fidelity"      # index.Index.query (read-only)
    ablate pool ls                                 # members and their costs
    ablate pool verify                             # verify.verify_pool
    ablate pool reindex                            # index.Index.rebuild
    ablate report                                  # report.write_report

Each function is one command's signature and a thin call into the library; ablate/cli/app.py
registers them by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ablate.cli.shared import ConfigOpt, SetOpt, emit, open_study, print_query, say
from ablate.core.errors import UsageError
from ablate.core.progress import out as stdout


def sql(query: Annotated[str, typer.Argument(help="one read-only SQL statement")],
        fmt: Annotated[str, typer.Option("--format", help="table|csv|json|parquet")] = "table",
        out: Annotated[Optional[Path], typer.Option("--out", help="write to a file")] = None,
        config: ConfigOpt = None, set_: SetOpt = None):
    """Run a read-only query on the index (tables: units, models, mixture_perplexity; views: see docs/sql.md)."""
    from ablate.store.index import Index, check_read_only

    cfg, pool = open_study(config, set_, check_study=False)
    if fmt not in ("table", "csv", "json", "parquet"):
        raise UsageError(f"unknown --format {fmt!r}: use table, csv, json or parquet")
    check_read_only(query)
    cols, rows = Index(pool).query(query, sandboxed=True)
    emit(cols, rows, fmt, out)


def pool_ls(config: ConfigOpt = None, set_: SetOpt = None):
    """Members with their costs."""
    cfg, pool = open_study(config, set_, check_study=False)
    print_query(pool, "SELECT model_id, kind, array_to_string(units, ',') AS units, n_params, train_tokens, "
                      "steps, round(wall_s, 1) AS wall_s, round(energy_kwh * 1000, 4) AS energy_wh, "
                      "round(co2_kg * 1000, 4) AS co2_g, flops, device FROM models ORDER BY kind, model_id",
                "table", None)


def pool_verify(config: ConfigOpt = None, set_: SetOpt = None):
    """Check every member's weights against its recorded sha256, size and tensor shapes."""
    from ablate.scoring.verify import verify_pool

    cfg, pool = open_study(config, set_, check_study=False)
    ok, problems = verify_pool(pool)
    for p in problems:
        stdout.print(f"BAD {p}", markup=False)
    say(f"{ok} members verified, {len(problems)} problems")
    if problems:
        raise typer.Exit(1)


def pool_reindex(config: ConfigOpt = None, set_: SetOpt = None):
    """Rebuild index.duckdb from the sidecars and result files."""
    from ablate.store.index import Index

    cfg, pool = open_study(config, set_, check_study=False)
    counts = Index(pool).rebuild()
    say("reindexed: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def report(out: Annotated[Path, typer.Option("--out", help="directory for report.md and plots")] = Path("report"),
           config: ConfigOpt = None, set_: SetOpt = None):
    """Write the fidelity and cost report (Markdown + PNG plots)."""
    from ablate.fidelity.report import priced, write_report

    cfg, pool = open_study(config, set_)
    path = write_report(pool, out, priced(cfg, pool))
    say(f"wrote {path}")
