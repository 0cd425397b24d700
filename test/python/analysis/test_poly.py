"""The isl model of a whole network: domains, accesses, dataflow and exact footprints."""

from __future__ import annotations

import islpy as isl
import pytest
import torch
from torch_mlir import ir

from polyfuse.analysis.poly import PolyModel, build_module_model
from polyfuse.compiler import UPSTREAM_PIPELINE, run_upstream
from polyfuse.frontend.importer import import_model
from polyfuse.models.small import ConvChain


@pytest.fixture(scope="module")
def model() -> PolyModel:
    torch.manual_seed(0)
    imported = import_model(ConvChain().eval(), [torch.randn(1, 2, 8, 8)])
    with imported.module.context:
        run_upstream(imported.module, UPSTREAM_PIPELINE)
        return build_module_model(imported.module.operation)


def _statements_by_loops(model: PolyModel) -> tuple[str, str, str]:
    # The other 4-loop statements are the zero fills of the convolutions' accumulators.
    convs = [s.name for s in model.statements if len(s.extents) == 7]
    assert len(convs) == 2, [s.extents for s in model.statements]
    relu = [d.consumer for d in model.dependences if d.producer == convs[0]]
    assert len(relu) == 1
    return convs[0], relu[0], convs[1]


def test_domains_and_dataflow(model: PolyModel) -> None:
    first, relu, second = _statements_by_loops(model)
    assert model.statement(first).extents == (1, 4, 8, 8, 2, 3, 3)
    assert model.statement(second).extents == (1, 3, 4, 4, 4, 3, 3)
    flows = {(d.producer, d.consumer) for d in model.dependences}
    assert (first, relu) in flows and (relu, second) in flows
    # The second conv reads the padded ReLU output through a view: the base is the ReLU's.
    relu_result = model.statement(relu).writes[0].tensor
    reads = [r for r in model.statement(second).reads if r.base == relu_result]
    assert len(reads) == 1 and reads[0].tensor != relu_result
    assert model.tensors[reads[0].tensor].view_of == relu_result


def test_conv_halo_footprint_is_exact(model: PolyModel) -> None:
    _, relu, second = _statements_by_loops(model)
    relu_result = model.statement(relu).writes[0].tensor
    # Output rows 1..2 (stride 2) need padded rows 2..6 = ReLU rows 1..5: a halo of one
    # row each side, every column 0..7 (the padding columns -1 and 8 are not produced).
    tile = isl.Set(
        "{ "
        + second
        + "[n, k, h, w, c, kh, kw] : n = 0 and 0 <= k < 3 and 1 <= h <= 2 and 0 <= w < 4 "
        "and 0 <= c < 4 and 0 <= kh < 3 and 0 <= kw < 3 }"
    )
    footprint = model.footprint(second, tile, relu_result)
    expected = isl.Set(
        "{ " + relu_result + "[0, c, h, w] : 0 <= c < 4 and 1 <= h <= 5 and 0 <= w <= 7 }"
    )
    assert footprint.is_equal(expected)
    assert footprint.count_val().to_python() == 4 * 5 * 8

    # At the top border the padding row is not part of the footprint: output row 0 needs
    # padded rows 0..2 = ReLU rows 0..1 only.
    top = isl.Set(
        "{ " + second + "[n, k, h, w, c, kh, kw] : n = 0 and 0 <= k < 3 and h = 0 and 0 <= w < 4 "
        "and 0 <= c < 4 and 0 <= kh < 3 and 0 <= kw < 3 }"
    )
    assert model.footprint(second, top, relu_result).count_val().to_python() == 4 * 2 * 8

    # Backwards to the ReLU's instances: exactly one instance per element.
    instances = model.producer_footprint(second, tile, relu_result)
    assert instances.count_val().to_python() == 4 * 5 * 8


def test_format_lists_every_statement(model: PolyModel) -> None:
    text = model.format()
    for statement in model.statements:
        assert f"statement {statement.name}" in text
    assert text.count("flow ") == len(model.dependences)


def test_named_ops_are_rejected_with_a_hint() -> None:
    imported = import_model(ConvChain().eval(), [torch.randn(1, 2, 8, 8)])
    with imported.module.context, pytest.raises(Exception, match="linalg-generalize-named-ops"):
        module: ir.Module = imported.module
        build_module_model(module.operation)
