"""The README and docs/ stay true: paths they name exist, commands they print parse, the SQL page matches the schema.

How to run:
    .venv/bin/python -m pytest -q tests/test_docs.py     # seconds: nothing is trained or run
    .venv/bin/python tests/test_docs.py                  # rewrite docs/sql.md's generated tables from the schema

What "parse" means: every `ablate ...` line of a ```bash block in README.md and docs/*.md is handed to the
command's own parser (click: the command exists, every option exists and its value has the right type, the
arguments fit), without running it. The recipes of docs/own-data.md also run verbatim
(tests/cli/test_own_data.py). A block that needs a GPU says so in an HTML comment right above it,
`<!-- needs a GPU -->`, and is still parsed.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
# Repository paths a page or a comment may name; pool/ is runtime output (git-ignored), except its README.
PATH = re.compile(r"(?<![\w/.$-])((?:ablate|tests|configs|bench|docs|\.ci)/[\w.*/-]*[\w*/]|pool/README\.md"
                  r"|Makefile|LICENSE|pyproject\.toml)")
LINK = re.compile(r"\]\(([^)#\s]+)[^)]*\)")
SCHEMA_START, SCHEMA_END = "<!-- schema:start -->", "<!-- schema:end -->"


def _exists(path: Path) -> bool:
    return any(path.parent.glob(path.name)) if "*" in path.name else path.exists()


def _named_paths(path: Path) -> list[str]:
    """Repository paths in a page (or in a config's comments), and a page's relative links."""
    text = path.read_text()
    if path.suffix == ".yaml":
        text = "\n".join(line.partition("#")[2] for line in text.splitlines() if "#" in line)
    found = [p for p in PATH.findall(text) if "<" not in p]
    if path.suffix == ".md":
        found += [str((path.parent / link).relative_to(ROOT)) if (path.parent / link).resolve().is_relative_to(ROOT)
                  else link for link in LINK.findall(text) if "://" not in link]
    return found


@pytest.mark.parametrize("path", PAGES + CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_page_or_config_comment_names_exists(path):
    missing = sorted({p for p in _named_paths(path) if not _exists(ROOT / p.rstrip("/"))})
    assert not missing, f"{path.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_no_page_refers_to_a_tracker_or_a_machine():
    """A reader has never seen the issue tracker or the machine these pages were written on."""
    bad = re.compile(r"\bissues?\b|(?<![\w&])#\d{2,}\b|(?<![\w.])/(?:work|tmp|home|root)/|\btargets? of\b")
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)!r}" for p in PAGES for m in bad.finditer(p.read_text())]
    assert not hits, hits


def test_readme_reads_in_five_minutes_and_keeps_its_verdict_markers():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert text.index("<!-- verdict:start -->") < text.index("<!-- verdict:end -->")
    assert "make demo" in text and "make test" in text


def test_the_readme_test_command_is_what_ci_runs():
    assert "make test" in (ROOT / ".ci" / "run").read_text().splitlines()[-1]


def _ablate_commands(text: str) -> list[tuple[int, list[str], bool]]:
    """(line, argv after `ablate`, needs a GPU) for every ablate command in the page's bash blocks."""
    out = []
    for block in re.finditer(r"(<!--[^>]*-->\n\s*)?```bash\n(.*?)```", text, re.S):
        gpu = bool(block.group(1)) and "needs a GPU" in block.group(1)
        start = text[:block.start(2)].count("\n") + 1
        lines, pending = block.group(2).replace("\\\n", "  \n").splitlines(), ""
        for offset, line in enumerate(lines):
            pending += line + "\n"
            try:  # a quoted SQL query may span lines: lex once its quotes close
                lexer = shlex.shlex(pending, posix=True, punctuation_chars=";&|<>")
                lexer.whitespace_split, lexer.commenters = True, "#"
                words, command = list(lexer), []
            except ValueError:
                continue
            pending = ""
            for word in words + [";"]:
                if word in (";", "&&", "||", "|", ">", ">>", "<", "&", "do", "then"):
                    if command[:1] == ["ablate"]:
                        out.append((start + offset, command[1:], gpu))
                    command = [] if word != ">" else [">"]
                else:
                    command.append(word)
    return out


def _cli():
    import typer

    from ablate.cli.app import app

    return typer.main.get_command(app)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_a_page_prints_parses(page):
    cli, failures = _cli(), []
    commands = _ablate_commands(page.read_text())
    for line, argv, _ in commands:
        try:
            name, command, rest = cli.resolve_command(cli.make_context("ablate", list(argv), resilient_parsing=True),
                                                      list(argv))
            while hasattr(command, "resolve_command"):  # a group: `ablate pool ls`
                name, command, rest = command.resolve_command(command.make_context(name, list(rest)), list(rest))
            command.make_context(name, list(rest))
        except Exception as exc:  # click's usage errors, typer's exits (`--help`)
            failures.append(f"line {line}: ablate {' '.join(argv)}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)
    if page.name != "README.md" and page.parent.name == "docs" and page.stem in ("commands", "own-data", "optimize"):
        assert commands, f"{page.name} prints no ablate command"


def test_the_dry_run_table_matches_the_commands():
    """docs/commands.md's two columns are exactly the commands with and without --dry-run."""
    cli = _cli()

    def leaves(group, prefix=""):
        for name, sub in group.commands.items():
            yield from leaves(sub, f"{prefix}{name} ") if hasattr(sub, "commands") else [(prefix + name, sub)]

    has = {name for name, c in leaves(cli) if any("--dry-run" in p.opts for p in c.params)}
    rest = {name for name, _ in leaves(cli)} - has
    text = (ROOT / "docs" / "commands.md").read_text()
    row = text[text.index("| takes `--dry-run` |"):].splitlines()[2]
    left, right = row.strip("|").split("|")
    assert set(re.findall(r"`([^`]+)`", left)) == has
    assert set(re.findall(r"`([^`]+)`", right)) == rest


def schema_markdown() -> str:
    """Every table and view of the index with its columns and types, from the schema's own DDL."""
    import duckdb

    from ablate.store.index import Index
    from ablate.store.schema import TABLES, VIEWS

    con = duckdb.connect()
    Index._create(con)
    lines = []
    for kind, names in (("table", TABLES), ("view", VIEWS)):
        for name in names:
            cols = con.execute(f"DESCRIBE {name}").fetchall()
            lines.append(f"- `{name}` ({kind}): " + ", ".join(f"`{c[0]}` {c[1]}" for c in cols))
    return "\n".join(lines)


def _sql_page_with(generated: str) -> str:
    text = (ROOT / "docs" / "sql.md").read_text()
    head, _, rest = text.partition(SCHEMA_START)
    _, _, tail = rest.partition(SCHEMA_END)
    return f"{head}{SCHEMA_START}\n{generated}\n{SCHEMA_END}{tail}"


def test_the_sql_page_lists_the_schema():
    text = (ROOT / "docs" / "sql.md").read_text()
    assert text == _sql_page_with(schema_markdown()), "docs/sql.md is stale: run `python tests/test_docs.py`"


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _module_tree(text: str) -> list[str]:
    """The paths the module tree of docs/architecture.md names: its ``` block under "## The module tree", one name
    a line, two spaces of indent per folder level, a folder ending in /."""
    block = text.split("## The module tree", 1)[1].split("```", 2)[1]
    paths, folders = [], []
    for line in block.splitlines():
        if not line.strip():
            continue
        depth, name = (len(line) - len(line.lstrip())) // 2, line.split()[0]
        folders = folders[:depth]
        paths.append("/".join(folders + [name.rstrip("/")]))
        if name.endswith("/"):
            folders.append(name.rstrip("/"))
    return paths


def test_every_module_the_architecture_page_names_exists():
    """docs/architecture.md drawn from the code: each module and folder of its tree exists, and its floors
    table lists the floors in the order tests/test_architecture.py enforces."""
    from test_architecture import LAYERS

    text = ARCHITECTURE.read_text()
    named = _module_tree(text)
    assert len(named) > 50 and named[0] == "ablate"
    missing = [p for p in named if not (ROOT / p).exists()]
    assert not missing, f"docs/architecture.md's module tree names modules that do not exist: {missing}"
    floors = re.findall(r"^\| `(\w+)/` \|", text.split("## The floors", 1)[1].split("##", 1)[0], re.M)
    assert tuple(floors) == LAYERS, f"docs/architecture.md's floors {floors} are not LAYERS {LAYERS}"
    assert _module_tree("## The module tree\n```\nablate/\n  core/\n    x.py\n  y.py\n```") == [
        "ablate", "ablate/core", "ablate/core/x.py", "ablate/y.py"]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    (ROOT / "docs" / "sql.md").write_text(_sql_page_with(schema_markdown()))
    print("rewrote docs/sql.md's tables from ablate/store/schema.py")
