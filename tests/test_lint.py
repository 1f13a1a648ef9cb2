"""The test command's lint step: imports sorted and no unused or undefined names (ruff's isort and pyflakes rules,
`[tool.ruff]` in pyproject.toml).

How to run:
    .venv/bin/python -m pytest -q tests/test_lint.py     # a second
    .venv/bin/ruff check --fix                           # sorts what it reports
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_are_sorted_and_every_name_is_used_and_defined():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                         cwd=ROOT, capture_output=True, text=True)
    fix = "`.venv/bin/ruff check --fix` sorts imports and drops unused ones"
    assert out.returncode == 0, f"lint ({fix}):\n{out.stdout}{out.stderr}"
