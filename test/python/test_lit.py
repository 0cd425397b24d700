"""Run the lit/FileCheck suite (test/lit) so that one `pytest` command runs everything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LIT_SUITE = Path(__file__).resolve().parents[1] / "lit"


def test_lit_suite() -> None:
    for module in ("lit", "filecheck"):
        try:
            __import__(module)
        except ImportError:
            pytest.fail(f"'{module}' is not installed; pip install -e '.[test]' (lit, filecheck)")
    # lit has no `python -m lit` entry point; run its main in this interpreter so the
    # RUN lines (see test/lit/lit.cfg.py) use the same environment.
    command = [sys.executable, "-c", "import sys; from lit.main import main; sys.exit(main())"]
    result = subprocess.run(
        [*command, "-v", str(LIT_SUITE)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"lit tests failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
