"""lit configuration for polyfuse's FileCheck tests (test/lit).

Run with `pytest` (test/python/test_lit.py) or directly:
`python -c 'from lit.main import main; main()' -v test/lit`. RUN lines use the tools
through the interpreter that runs lit, so they work in any venv without installing
console scripts: `polyfuse-opt`, `filecheck`/`FileCheck` and `%python` expand to
`<python> -m polyfuse.tools.opt`, `<python> -m filecheck` and `<python>`.
"""

# lit injects `config` and `lit_config`.
# ruff: noqa: F821
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import lit.formats

config.name = "polyfuse"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir"]
config.excludes = ["Output", "Inputs"]  # Inputs/ holds RUN-line inputs, not tests
config.test_source_root = str(Path(__file__).parent)

_python = shlex.quote(sys.executable)


def _tool(name: str) -> str:
    """Match `name` as a command word only, not inside paths such as %s."""
    return rf"(?<![\w/.-]){name}(?![\w/.-])"


config.substitutions.append(("%python", _python))
config.substitutions.append((_tool("polyfuse-opt"), f"{_python} -m polyfuse.tools.opt"))
config.substitutions.append((_tool("filecheck"), f"{_python} -m filecheck"))
config.substitutions.append((_tool("FileCheck"), f"{_python} -m filecheck"))

# Test the polyfuse that this interpreter imports: the installed package (CI), or the
# sources when the developer runs with PYTHONPATH=python (see README, "Developing").
# RUN lines run in other folders: a relative entry (`PYTHONPATH=python`) is made absolute,
# or they would silently import the installed copy instead of the sources.
if os.environ.get("PYTHONPATH"):
    config.environment["PYTHONPATH"] = os.pathsep.join(
        os.path.abspath(entry) for entry in os.environ["PYTHONPATH"].split(os.pathsep)
    )
