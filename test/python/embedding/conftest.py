"""The VTA preset and its instruction model, shared by the embedding tests."""

from __future__ import annotations

import pytest

from polyfuse.embedding import InstructionModel, instruction_model
from polyfuse.targets import Target, load_target


@pytest.fixture(scope="module")
def vta() -> tuple[Target, InstructionModel]:
    target = load_target("vta")
    return target, instruction_model(target)
