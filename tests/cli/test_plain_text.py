"""Cells, headers and progress labels are plain text: `[brackets]` and `[bold]` are data, never markup (issue 24)."""

from __future__ import annotations

import io

from rich.console import Console

from ablate.cli.shared import print_rows
from ablate.core import progress

from conftest import run_cli, write_config


def test_sql_table_and_csv_show_bracketed_text(study, tmp_path, capsys):
    cfg, _, _, _ = study
    path = str(write_config(cfg, tmp_path / "c.yaml"))
    sql = "SELECT [unit_id]::VARCHAR AS m2, '[bold]x' AS \"[h]\" FROM units WHERE unit_id = 'fortunes-00'"
    code, out, err = run_cli(["sql", sql, "-c", path], capsys)
    assert code == 0, err
    assert "[fortunes-00]" in out and "[bold]x" in out and "[h]" in out
    code, out, err = run_cli(["sql", sql, "--format", "csv", "-c", path], capsys)
    assert code == 0 and "\r" not in out and out.endswith("\n") and "[bold]x" in out


def test_result_tables_of_every_command_print_cells_verbatim(capsys):
    """search, sweep --target, pool ls, calibrate and optimize all print through print_rows."""
    print_rows(["unit", "[bold]"], [{"unit": "[red]u[/red]", "[bold]": ["[a]", "b"]}])
    out = capsys.readouterr().out
    assert "[red]u[/red]" in out and "[a],b" in out and "[bold]" in out


def test_progress_labels_and_fields_are_plain(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=buffer, width=200, force_terminal=False))
    monkeypatch.setenv("ABLATE_QUIET", "0")
    with progress.bar("search [bold]lit[/bold]", 2, 0, {"page": "-"}) as update:
        update(1, page="[red]p")
    assert "search [bold]lit[/bold]" in buffer.getvalue() and "page=[red]p" in buffer.getvalue()
