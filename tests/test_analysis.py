"""FLOP counting sees the attention that scaled_dot_product_attention computes."""
import torch

from acmix_mm.analysis import complexity
from acmix_mm.layers import TokenACmix


class Wrapper(torch.nn.Module):

    def __init__(self, op, hw_shape):
        super().__init__()
        self.op, self.hw_shape = op, hw_shape

    def forward(self, x):
        return self.op(x, self.hw_shape)


def test_acmix_flops_add_up_by_hand():
    dims, heads, (height, width), ratio = 32, 2, (8, 12), 2
    tokens, reduced = height * width, (height // ratio) * (width // ratio)
    op = TokenACmix(dims, heads, attn_path=dict(type='SpatialReductionAttentionPath',
                                           sr_ratio=ratio))
    flops, params = complexity(Wrapper(op, (height, width)), (torch.randn(1, tokens, dims),))
    head_dims = dims // heads
    expected = (
        tokens * dims * 3 * dims  # Stage I: shared q, k, v projection
        + reduced * dims * dims * ratio * ratio  # spatial reduction conv
        + reduced * dims * 5  # its LayerNorm, as mmengine counts norms
        + reduced * dims * 2 * dims  # k, v of the reduced tokens
        + 2 * tokens * reduced * dims  # q k^T and attention x v, all heads
        + tokens * dims * dims  # output projection
        + tokens * head_dims * 3 * heads * 9  # conv path: fc over the 3*heads pieces
        + tokens * dims * 9 * 9)  # conv path: shift group convolution
    assert flops == expected
    assert params == sum(p.numel() for p in op.parameters())
