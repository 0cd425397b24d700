"""The accel dialect's Python builders, readers and verifier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_mlir import ir
from torch_mlir.dialects import func

from polyfuse.dialects import accel
from polyfuse.dialects.verify import format_location, verify_accel
from polyfuse.errors import VerificationError
from polyfuse.runtime.isa import VectorKind


@pytest.fixture
def context() -> Iterator[ir.Context]:
    context = ir.Context()
    accel.load_accel_dialect(context)
    with context, ir.Location.file("test.py", 1, 1):
        yield context


def _function(
    arguments: list[ir.Type], target: bool = False
) -> tuple[ir.Module, ir.Block, list[ir.Value]]:
    module = ir.Module.create()
    if target:
        module.operation.attributes["accel.target"] = ir.Attribute.parse(
            '{name = "tiny", scratchpad_bytes = 4096 : i64, pe_rows = 4 : i64, pe_cols = 4 : i64}'
        )
    with ir.InsertionPoint(module.body):
        function = func.FuncOp("f", (arguments, []))
        entry = function.add_entry_block()
    return module, entry, list(entry.arguments)


def _finish(entry: ir.Block) -> None:
    with ir.InsertionPoint(entry):
        func.ReturnOp([])


def test_load_is_idempotent_and_per_context() -> None:
    first, second = ir.Context(), ir.Context()
    accel.load_accel_dialect(first)
    accel.load_accel_dialect(first)
    assert first.is_registered_operation("accel.matmul")
    assert not second.is_registered_operation("accel.matmul")
    accel.load_accel_dialect(second)
    assert second.is_registered_operation("accel.matmul")


def test_dialect_file_is_found() -> None:
    assert accel.dialect_file().name == "accel.irdl.mlir"
    assert accel.dialect_file().exists()


def test_token_type_is_cached_per_context(context: ir.Context) -> None:
    assert str(accel.token_type()) == "!accel.token"
    assert accel.token_type() == accel.token_type(context)
    other = ir.Context()
    accel.load_accel_dialect(other)
    assert accel.token_type(other).context is other


def test_builders_round_trip(context: ir.Context) -> None:
    dram = ir.MemRefType.get([64, 64], ir.F32Type.get())
    index = ir.IndexType.get()
    module, entry, (matrix, i, j) = _function([dram, index, index])
    with ir.InsertionPoint(entry):
        tile = accel.alloc(256, 0)
        acc = accel.alloc(16, 1024)
        assert str(tile.type) == "memref<256xf32, 1>"
        token = accel.dma_start(
            tile, matrix, [i, j], [16, 16], [(0, (0, 0)), (3, (1024, 16))], [[16, 1], [64, 1]]
        )
        wait = accel.dma_wait(token)
        product = accel.matmul(
            acc,
            tile,
            tile,
            [i],
            [1, 4, 4, 4, 1, 1],
            [(0, (0,)), (5, (2,)), (0, (-1,))],
            [[0, 4, 1, 0, 0, 0], [0, 4, 0, 1, 0, 0], [0, 0, 1, 4, 0, 0]],
            accumulate=True,
        )
        fma = accel.vector(
            VectorKind.FMA,
            acc,
            [acc, tile, tile],
            [],
            [16],
            [(0, ()), (0, ()), (16, ()), (32, ())],
            [[1], [1], [1], [0]],
        )
        fill = accel.vector("copy", acc, [], [], [16], [(0, ())], [[1]], scalar=0.0)
        accel.dealloc(tile)
    _finish(entry)
    module.operation.verify()

    assert accel.read_shape(token.owner) == (16, 16)
    assert accel.read_accesses(token.owner) == [(0, (0, 0)), (3, (1024, 16))]
    assert accel.read_strides(token.owner) == [(16, 1), (64, 1)]
    assert wait.operands[0] == token
    assert accel.read_accesses(product) == [(0, (0,)), (5, (2,)), (0, (-1,))]
    assert ir.BoolAttr(product.attributes["accumulate"]).value
    assert accel.read_kind(fma) == "fma"
    assert accel.read_scalar(fma) is None
    assert accel.read_scalar(fill) == 0.0
    views = accel.view_operands(fma)
    assert views.buffers == [acc, acc, tile, tile] and views.ivs == []
    assert accel.view_operands(fill).buffers == [acc]
    assert accel.view_operands(token.owner).ivs == [i, j]

    # Printed generic IR parses back to the same text.
    text = str(module)
    assert str(ir.Module.parse(text)) == text


def test_vector_operand_segments(context: ir.Context) -> None:
    module, entry, _ = _function([])
    with ir.InsertionPoint(entry):
        buffer = accel.alloc(16, 0)
        one = accel.vector("exp", buffer, [buffer], [], [16], [(0, ())] * 2, [[1]] * 2)
        two = accel.vector(
            "select", buffer, [buffer, buffer], [], [16], [(0, ())] * 3, [[1]] * 3, scalar=1.0
        )
    _finish(entry)
    assert list(ir.DenseI32ArrayAttr(one.attributes["operandSegmentSizes"])) == [1, 1, 0, 0, 0]
    assert list(ir.DenseI32ArrayAttr(two.attributes["operandSegmentSizes"])) == [1, 1, 1, 0, 0]
    verify_accel(module.operation)


@pytest.mark.parametrize(
    ("text", "access"),
    [
        ("(d0, d1) -> (d0 * 4 + d1 * 2 + 3)", (3, (4, 2))),
        ("(d0, d1) -> (d1 - d0)", (0, (-1, 1))),
        ("(d0) -> ((d0 + 1) * 4)", (4, (4,))),
        ("(d0, d1) -> (2 * (d0 + d1 * 3) - 7)", (-7, (2, 6))),
        ("() -> (42)", (42, ())),
        ("(d0, d1, d2) -> (d2)", (0, (0, 0, 1))),
    ],
)
def test_linear_access_parses_any_linear_map(
    context: ir.Context, text: str, access: accel.Access
) -> None:
    map_ = ir.AffineMapAttr(ir.Attribute.parse(f"affine_map<{text}>")).value
    assert accel.linear_access(map_) == access


@pytest.mark.parametrize(
    "text",
    [
        "(d0) -> (d0 mod 4)",
        "(d0) -> (d0 floordiv 2)",
        "(d0) -> (d0 ceildiv 2)",
        "(d0)[s0] -> (d0 + s0)",
        "(d0) -> (d0, d0)",
    ],
)
def test_linear_access_rejects_nonlinear_maps(context: ir.Context, text: str) -> None:
    map_ = ir.AffineMapAttr(ir.Attribute.parse(f"affine_map<{text}>")).value
    with pytest.raises(ValueError):
        accel.linear_access(map_)


_coefficient = st.integers(min_value=-(2**20), max_value=2**20)


@settings(max_examples=200, deadline=None)
@given(
    c0=_coefficient,
    coeffs=st.lists(_coefficient, min_size=0, max_size=8),
)
def test_access_map_round_trip(c0: int, coeffs: list[int]) -> None:
    context = ir.Context()
    with context:
        map_ = accel.access_map(len(coeffs), (c0, tuple(coeffs)))
        assert map_.n_dims == len(coeffs)
        assert accel.linear_access(map_) == (c0, tuple(coeffs))


def test_builder_rejects_mismatched_access(context: ir.Context) -> None:
    with pytest.raises(ValueError, match="2 coefficients for 1 ivs"):
        accel.access_map(1, (0, (1, 2)))


def test_verify_accel_reports_location_and_remedy(context: ir.Context) -> None:
    module, entry, _ = _function([], target=True)
    with ir.InsertionPoint(entry):
        a = accel.alloc(64, 0)
        loc = ir.Location.file("model.py", 12, 5)
        accel.matmul(
            a,
            a,
            a,
            [],
            [1, 1, 4, 8, 1, 1],
            [(0, ())] * 3,
            [[0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0], [0, 0, 1, 4, 0, 0]],
            accumulate=False,
            loc=loc,
        )
    _finish(entry)
    with pytest.raises(VerificationError) as error:
        verify_accel(module.operation)
    message = str(error.value)
    assert message.startswith("model.py:12:5: error: 'accel.matmul' op reduces over K1*K2*K3 = 8")
    assert "split the reduction" in message


def test_verify_accel_runs_mlir_verifier_first(context: ir.Context) -> None:
    module, entry, _ = _function([])
    with ir.InsertionPoint(entry):
        # accel.dma_wait on a non-token: caught by the IRDL constraints.
        buffer = accel.alloc(16, 0)
        ir.Operation.create(
            "accel.dma_wait", operands=[buffer], loc=ir.Location.file("x.mlir", 3, 4)
        )
    _finish(entry)
    with pytest.raises(
        VerificationError, match=r"^x.mlir:3:4: error: expected base type 'accel.token'"
    ):
        verify_accel(module.operation)


def test_format_location(context: ir.Context) -> None:
    assert format_location(ir.Location.file("a.mlir", 3, 7)) == "a.mlir:3:7"
    named = ir.Location.name("conv1", ir.Location.file("m.py", 9, 1))
    assert format_location(named) == "m.py:9:1"
    assert format_location(ir.Location.name("conv1")) == "conv1"
    assert format_location(ir.Location.unknown()) == "<unknown>"


def test_static_bounds_follow_loops(context: ir.Context) -> None:
    """An affine.for iv's range is used for the bounds check; 0..3 x 64 + 16 fits in 256."""
    text = """
    func.func @f(%dram: memref<256xf32>) {
      %b = "accel.alloc"() {offset = 0 : i64} : () -> memref<64xf32, 1>
      affine.for %i = 0 to 4 {
        %t = "accel.dma_start"(%b, %dram, %i) {shape = array<i64: 64>, offsets = [affine_map<(d0) -> (0)>, affine_map<(d0) -> (d0 * 64)>], strides = [array<i64: 1>, array<i64: 1>]} : (memref<64xf32, 1>, memref<256xf32>, index) -> !accel.token
        "accel.dma_wait"(%t) : (!accel.token) -> ()
      }
      return
    }
    """
    verify_accel(ir.Module.parse(text).operation)
    with pytest.raises(VerificationError, match=r"source view touches elements 0\.\.319"):
        verify_accel(ir.Module.parse(text.replace("0 to 4", "0 to 5")).operation)
