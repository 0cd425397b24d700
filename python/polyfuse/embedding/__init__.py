"""Embedding operators into the accelerator's compute instruction (issue 6).

operators.py    matmul, batched matmul and conv2d as named loop nests
instruction.py  the target's compound instruction and its cycle cost
embedding.py    an embedding (dims -> instruction dims), its cost, the fixed strategy
layout.py       the layout transformations an embedding needs and their traffic
solver.py       the CP-SAT formulation: enumerate, minimise cycles then traffic
layout_program.py  the layout transformations as accel programs (DMA + vector copies)
lower.py        the GEMM program of an embedding; runs it and the layout programs on the
                emulator
"""

from polyfuse.embedding.embedding import Embedding, Part, cycles_of, fixed_embedding, utilization
from polyfuse.embedding.instruction import InstructionModel, instruction_model
from polyfuse.embedding.operators import ContractionOp, ConvParams, batched_matmul, conv2d, matmul
from polyfuse.embedding.solver import Solution, enumerate_embeddings, solve

__all__ = [
    "ContractionOp",
    "ConvParams",
    "Embedding",
    "InstructionModel",
    "Part",
    "Solution",
    "batched_matmul",
    "conv2d",
    "cycles_of",
    "enumerate_embeddings",
    "fixed_embedding",
    "instruction_model",
    "matmul",
    "solve",
    "utilization",
]
