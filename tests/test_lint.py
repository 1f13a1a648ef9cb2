"""The test command's lint step: imports sorted everywhere (ruff's isort rules, `[tool.ruff]` in pyproject.toml).

How to run:
    .venv/bin/python -m pytest -q tests/test_lint.py     # a second
    .venv/bin/ruff check --fix                           # sorts what it reports
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_imports_are_sorted():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, f"unsorted imports (`.venv/bin/ruff check --fix` sorts them):\n{out.stdout}{out.stderr}"
