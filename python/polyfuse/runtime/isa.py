"""The emulated accelerator's instruction encoding (what the native core executes).

An accel program is serialised (see `serialize.py`) into a table of fixed-size int64
records, one per instruction, plus one float64 immediate per record. The native core
(`native/emulator.cpp`) interprets the table; this module is the single source of truth
for the layout and the opcodes, and the C++ side mirrors the constants below.

Record layout (RECORD_WORDS int64 words):

    word 0            opcode (OP_*)
    word 1            sub-opcode: vector kind (VEC_*), loop depth for OP_LOOP
    words 2..7        shape: the instruction's iteration space, 6 dims, unused dims = 1
    word 8            DMA token id (OP_DMA, OP_WAIT)
    word 9            flags (FLAG_*)
    word 10           aux: trip count (OP_LOOP), pc of the matching OP_LOOP (OP_ENDLOOP)
    word 11           location id (index into the program's location table, for errors)
    word 12           operator group id (which operator the instruction belongs to, for
                      per-operator statistics and the trace; 0 when not set)
    words 13..15      reserved (0)
    words 16..95      four operand views, VIEW_WORDS words each (view i at 16 + 20*i)

A view addresses memory with an affine access pattern, as a DMA descriptor or an
Inferentia-style access pattern does:

    view word 0       memory: MEM_NONE, MEM_SPM, MEM_DRAM or MEM_IMM
    view word 1       DRAM buffer id (MEM_DRAM only)
    view word 2       c0, constant element offset
    view words 3..10  c[0..7]: element offset per enclosing loop induction variable
    view words 11..16 strides[0..5]: element stride per iteration-space dim (0 = broadcast)
    view words 17..19 reserved (0)

The element at iteration index (i0..i5) is at
    c0 + sum_l c[l] * iv[l] + sum_d strides[d] * i_d
in the view's memory (the scratchpad, addressed in elements from 0, or DRAM buffer id).
MEM_IMM stands for the record's immediate scalar. All data is float32.

Operand order per opcode:
    OP_DMA     view0 = destination, view1 = source; one is MEM_SPM, the other MEM_DRAM.
               Asynchronous: the destination may not be read before OP_WAIT on the token.
    OP_WAIT    no views; waits for token `word 8`.
    OP_MATMUL  view0 = C, view1 = A, view2 = B; shape = (M1, M2, N, K1, K2, K3):
               C[m1,m2,n] (+)= sum_k A[m1,m2,k1,k2,k3] * B[k1,k2,k3,n]
               (each view gives strides over all six dims; FLAG_ACCUMULATE adds to C).
    OP_VECTOR  view0 = dst, view1..3 = sources a, b, c (MEM_NONE when unused);
               for every index in row-major order of shape: dst = f(a, b, c).
               Executed strictly in order, so a dst that aliases `a` with stride 0 on
               some dims is a reduction over those dims.
    OP_LOOP    begins a counted loop of `aux` trips at depth `sub` (0-based); its
               induction variable iv[sub] runs 0..aux-1.
    OP_ENDLOOP ends the loop that begins at pc `aux`.
    OP_ALLOC   view0 = the scratchpad range [c0, c0 + shape[0]) becomes a live buffer (an
               `accel.alloc`); with checks on, overflow or overlap with a live buffer traps.
    OP_FREE    the buffer allocated by the OP_ALLOC at pc `aux` is released.
"""

from __future__ import annotations

from enum import IntEnum

RECORD_WORDS = 96
VIEW_WORDS = 20
VIEW_BASE = 16
MAX_DIMS = 6
MAX_LOOP_DEPTH = 8

W_OPCODE = 0
W_SUB = 1
W_SHAPE = 2
W_TOKEN = 8
W_FLAGS = 9
W_AUX = 10
W_LOCATION = 11
W_GROUP = 12

V_MEMORY = 0
V_BUFFER = 1
V_C0 = 2
V_COEFFS = 3
V_STRIDES = 11

FLAG_ACCUMULATE = 1


class Opcode(IntEnum):
    LOOP = 0
    ENDLOOP = 1
    DMA = 2
    WAIT = 3
    MATMUL = 4
    VECTOR = 5
    ALLOC = 6
    FREE = 7


class Memory(IntEnum):
    NONE = 0
    SPM = 1
    DRAM = 2
    IMM = 3


class VectorKind(IntEnum):
    """Vector-unit operations. Arity is the number of sources read."""

    COPY = 0  # a
    ADD = 1  # a + b
    SUB = 2  # a - b
    MUL = 3  # a * b
    DIV = 4  # a / b
    MAX = 5  # max(a, b), NaN-propagating (arith.maximumf)
    MIN = 6  # min(a, b), NaN-propagating (arith.minimumf)
    POW = 7  # a ** b
    NEG = 8  # -a
    EXP = 9
    LOG = 10
    TANH = 11
    ERF = 12
    SQRT = 13
    RSQRT = 14
    ABS = 15
    FMA = 16  # a * b + c
    SELECT = 17  # b if a != 0 else c
    CMP_OGT = 18  # 1.0 if ordered and a > b else 0.0
    CMP_OGE = 19
    CMP_OLT = 20
    CMP_OLE = 21
    CMP_OEQ = 22
    CMP_ONE = 23
    CMP_UGT = 24  # 1.0 if unordered or a > b else 0.0
    CMP_UGE = 25
    CMP_ULT = 26
    CMP_ULE = 27
    CMP_UEQ = 28
    CMP_UNE = 29
    LOG1P = 30
    EXPM1 = 31
    SIN = 32
    COS = 33
    FLOOR = 34
    CEIL = 35
    RECIP = 36  # 1 / a
    SIGMOID = 37  # 1 / (1 + exp(-a))
    MAXNUM = 38  # fmax(a, b), NaN-ignoring (arith.maxnumf)
    MINNUM = 39  # fmin(a, b)


VECTOR_ARITY: dict[VectorKind, int] = {
    **{k: 1 for k in VectorKind},
    VectorKind.ADD: 2,
    VectorKind.SUB: 2,
    VectorKind.MUL: 2,
    VectorKind.DIV: 2,
    VectorKind.MAX: 2,
    VectorKind.MIN: 2,
    VectorKind.POW: 2,
    VectorKind.MAXNUM: 2,
    VectorKind.MINNUM: 2,
    **{k: 2 for k in VectorKind if k.name.startswith("CMP_")},
    VectorKind.FMA: 3,
    VectorKind.SELECT: 3,
}
