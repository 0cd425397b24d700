"""A BERT-base encoder layer written with explicit attention math.

Attention is spelled out (projections, reshape/permute to heads, QK^T / sqrt(d), softmax,
times V, permute back) instead of calling `nn.MultiheadAttention` or
`F.scaled_dot_product_attention`: those dispatch to fused kernels the importer cannot lower.
The layer is post-norm as in BERT (residual add, then LayerNorm) and has no attention mask.
Dropout is left out: it is the identity in eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class EncoderLayer(nn.Module):
    """A post-norm transformer encoder layer: self-attention, add & norm, FFN, add & norm.

    Input and output are (batch, sequence, hidden).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        layer_norm_eps: float = 1e-12,
        activation: type[nn.Module] = nn.GELU,
    ) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(
                f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}"
            )
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.attention_output = nn.Linear(hidden_size, hidden_size)
        self.attention_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.intermediate = nn.Linear(hidden_size, intermediate_size)
        self.activation = activation()
        self.output = nn.Linear(intermediate_size, hidden_size)
        self.output_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq, hidden) -> (batch, heads, seq, head_size)."""
        batch, sequence, _ = x.shape
        return x.reshape(batch, sequence, self.num_heads, self.head_size).permute(0, 2, 1, 3)

    def self_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-head scaled dot-product self-attention, before the output projection."""
        batch, sequence, hidden = x.shape
        query = self._split_heads(self.query(x))
        key = self._split_heads(self.key(x))
        value = self._split_heads(self.value(x))
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_size)
        probabilities = torch.softmax(scores, dim=-1)
        context = torch.matmul(probabilities, value)
        return context.permute(0, 2, 1, 3).reshape(batch, sequence, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attended = self.attention_norm(x + self.attention_output(self.self_attention(x)))
        feed_forward = self.output(self.activation(self.intermediate(attended)))
        return self.output_norm(attended + feed_forward)


BERT_BASE_SEQUENCE_LENGTH = 128
BERT_BASE_HIDDEN_SIZE = 768


def bert_base_encoder_layer() -> EncoderLayer:
    """One BERT-base layer: hidden 768, 12 heads, FFN 3072, exact (erf) GELU, LN eps 1e-12."""
    return EncoderLayer(
        hidden_size=BERT_BASE_HIDDEN_SIZE,
        num_heads=12,
        intermediate_size=3072,
        layer_norm_eps=1e-12,
        activation=nn.GELU,
    )
