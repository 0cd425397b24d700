"""Compute operators as named loop nests, the input of the embedding problem.

An operator is a contraction `out[...] += lhs[...] * rhs[...]` over named loop dims.
Every operand axis is an affine function of the dims (a convolution's input row is
`oh * stride + r * dilation - pad`), so the same description serves matmul, batched
matmul and every conv2d variant (strided, dilated, grouped, depthwise):

    matmul   C[m, n]            += A[m, k] * B[k, n]
    bmm      C[b, m, n]         += A[b, m, k] * B[b, k, n]
    conv2d   Y[n, g*K+k, oh, ow] += X[n, g*C+c, oh*sh+r*dh-ph, ow*sw+s*dw-pw] * W[g*K+k, c, r, s]

A dim's role follows from the operands it indexes: `lhs` (lhs and out), `rhs` (rhs and
out), `reduction` (lhs and rhs) or `batch` (all three).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROLES = ("lhs", "rhs", "reduction", "batch")


@dataclass(frozen=True)
class Axis:
    """One axis of an operand: index = sum(coeff * dim) + offset, `size` elements long."""

    terms: tuple[tuple[str, int], ...]
    offset: int
    size: int


@dataclass(frozen=True)
class OperandSpec:
    """An operand stored row-major over `axes`."""

    name: str
    axes: tuple[Axis, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(axis.size for axis in self.axes)

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def uses(self, dim: str) -> bool:
        return any(dim == name for axis in self.axes for name, _ in axis.terms)

    def padding(self, extents: dict[str, int]) -> tuple[tuple[int, int], ...]:
        """Zero padding (low, high) per axis so that every index the dims reach is in range."""
        pads = []
        for axis in self.axes:
            reach = axis.offset + sum(coeff * (extents[dim] - 1) for dim, coeff in axis.terms)
            pads.append((max(0, -axis.offset), max(0, reach - (axis.size - 1))))
        return tuple(pads)


@dataclass(frozen=True)
class ConvParams:
    """A conv2d in PyTorch's NCHW / KCRS layouts (DeepBench's columns plus groups, dilation)."""

    n: int
    c: int  # input channels (all groups)
    h: int
    w: int
    k: int  # output channels (all groups)
    r: int
    s: int
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        oh = (self.h + 2 * self.pad[0] - self.dilation[0] * (self.r - 1) - 1) // self.stride[0] + 1
        ow = (self.w + 2 * self.pad[1] - self.dilation[1] * (self.s - 1) - 1) // self.stride[1] + 1
        return oh, ow


@dataclass(frozen=True)
class ContractionOp:
    """`out += lhs * rhs` over `dims` (name, extent); lhs holds activations, rhs weights."""

    kind: str  # "matmul", "bmm" or "conv2d"
    label: str
    dims: tuple[tuple[str, int], ...]
    lhs: OperandSpec
    rhs: OperandSpec
    out: OperandSpec
    conv: ConvParams | None = None  # the conv2d's parameters, for the reference

    @property
    def extents(self) -> dict[str, int]:
        return dict(self.dims)

    @property
    def macs(self) -> int:
        return int(np.prod([extent for _, extent in self.dims], dtype=np.int64))

    def role(self, dim: str) -> str:
        in_lhs, in_rhs, in_out = self.lhs.uses(dim), self.rhs.uses(dim), self.out.uses(dim)
        if in_lhs and in_rhs and in_out:
            return "batch"
        if in_lhs and in_out:
            return "lhs"
        if in_rhs and in_out:
            return "rhs"
        if in_lhs and in_rhs:
            return "reduction"
        raise ValueError(f"{self.label}: dim {dim} is not a contraction dim")

    def operand(self, name: str) -> OperandSpec:
        return {"lhs": self.lhs, "rhs": self.rhs, "out": self.out}[name]


def _axis(size: int, *terms: tuple[str, int], offset: int = 0) -> Axis:
    return Axis(tuple(terms), offset, size)


def matmul(m: int, n: int, k: int) -> ContractionOp:
    """C[m, n] = A[m, k] @ B[k, n] (DeepBench's M, N, K)."""
    return ContractionOp(
        "matmul",
        f"gemm {m}x{n}x{k}",
        (("m", m), ("n", n), ("k", k)),
        OperandSpec("A", (_axis(m, ("m", 1)), _axis(k, ("k", 1)))),
        OperandSpec("B", (_axis(k, ("k", 1)), _axis(n, ("n", 1)))),
        OperandSpec("C", (_axis(m, ("m", 1)), _axis(n, ("n", 1)))),
    )


def batched_matmul(b: int, m: int, n: int, k: int) -> ContractionOp:
    """C[b, m, n] = A[b, m, k] @ B[b, k, n]."""
    return ContractionOp(
        "bmm",
        f"bmm {b}x{m}x{n}x{k}",
        (("b", b), ("m", m), ("n", n), ("k", k)),
        OperandSpec("A", (_axis(b, ("b", 1)), _axis(m, ("m", 1)), _axis(k, ("k", 1)))),
        OperandSpec("B", (_axis(b, ("b", 1)), _axis(k, ("k", 1)), _axis(n, ("n", 1)))),
        OperandSpec("C", (_axis(b, ("b", 1)), _axis(m, ("m", 1)), _axis(n, ("n", 1)))),
    )


def conv2d(p: ConvParams) -> ContractionOp:
    """Y = conv2d(X, W) with X NCHW, W (K, C/groups, R, S), Y NKHW."""
    if p.c % p.groups or p.k % p.groups:
        raise ValueError(f"channels {p.c}, {p.k} are not divisible by groups {p.groups}")
    oh, ow = p.out_hw
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d {p}: empty output")
    cg, kg = p.c // p.groups, p.k // p.groups
    (sh, sw), (ph, pw), (dh, dw) = p.stride, p.pad, p.dilation
    x = OperandSpec(
        "X",
        (
            _axis(p.n, ("n", 1)),
            _axis(p.c, ("g", cg), ("c", 1)),
            _axis(p.h, ("oh", sh), ("r", dh), offset=-ph),
            _axis(p.w, ("ow", sw), ("s", dw), offset=-pw),
        ),
    )
    w = OperandSpec(
        "W",
        (
            _axis(p.k, ("g", kg), ("k", 1)),
            _axis(cg, ("c", 1)),
            _axis(p.r, ("r", 1)),
            _axis(p.s, ("s", 1)),
        ),
    )
    y = OperandSpec(
        "Y",
        (
            _axis(p.n, ("n", 1)),
            _axis(p.k, ("g", kg), ("k", 1)),
            _axis(oh, ("oh", 1)),
            _axis(ow, ("ow", 1)),
        ),
    )
    dims = (
        ("n", p.n),
        ("g", p.groups),
        ("k", kg),
        ("oh", oh),
        ("ow", ow),
        ("c", cg),
        ("r", p.r),
        ("s", p.s),
    )
    extra = []
    if p.stride != (1, 1):
        extra.append(f"stride {sh}x{sw}")
    if p.dilation != (1, 1):
        extra.append(f"dilation {dh}x{dw}")
    if p.groups > 1:
        extra.append(f"groups {p.groups}")
    label = f"conv {p.n}x{p.c}x{p.h}x{p.w} k{p.k} {p.r}x{p.s}" + (
        " " + " ".join(extra) if extra else ""
    )
    return ContractionOp("conv2d", label, dims, x, w, y, p)


def reference(op: ContractionOp, lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """The operator computed by numpy (matmul, bmm) or PyTorch (conv2d), in float64."""
    if op.kind == "matmul":
        return lhs.astype(np.float64) @ rhs.astype(np.float64)
    if op.kind == "bmm":
        return np.matmul(lhs.astype(np.float64), rhs.astype(np.float64))
    import torch

    conv = op.conv
    assert conv is not None
    out = torch.nn.functional.conv2d(
        torch.from_numpy(lhs.astype(np.float64)),
        torch.from_numpy(rhs.astype(np.float64)),
        stride=conv.stride,
        padding=conv.pad,
        dilation=conv.dilation,
        groups=conv.groups,
    )
    return out.numpy()
