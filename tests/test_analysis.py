"""FLOP counting sees the attention that scaled_dot_product_attention computes."""
import re

import torch

from acmix_mm.analysis import complexity, peak_allocated_bytes
from acmix_mm.layers import ACmix, TokenACmix

from conftest import run_tool


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


def test_sliding_window_acmix_flops_add_up_by_hand():
    """The block-sparse attention is counted as the paper counts it: k*k keys a query."""
    channels, heads, (height, width) = 16, 4, (12, 10)
    op = ACmix(channels, channels, kernel_att=7, head=heads, stride=2)
    flops, _ = complexity(op, (torch.randn(1, channels, height, width), ))
    pixels, out_pixels = height * width, 6 * 5
    expected = (
        pixels * channels * 3 * channels  # shared projection
        + pixels * 2 * (channels // heads)  # position encoding of every pixel
        + 2 * out_pixels * 49 * channels  # q.k and attention.v over 7x7 windows
        + pixels * (channels // heads) * 3 * heads * 9  # conv path fc
        + out_pixels * channels * 9 * 9)  # strided shift group convolution
    assert flops == expected


def test_get_flops_tool_prints_flops_and_params():
    proc = run_tool('tools/get_flops.py', 'configs/retinanet_pvt_acmix_t_1x.py', '--shape',
                    '256', '320')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'Input shape: (1, 3, 256, 320)' in proc.stdout
    assert re.search(r'^Flops: [0-9.]+G$', proc.stdout, re.M)
    assert re.search(r'^Params: 23\.13M$', proc.stdout, re.M)
    proc = run_tool('tools/get_flops.py', 'configs/no_such.py')
    assert proc.returncode == 1 and 'Config file not found' in proc.stderr


def test_peak_allocated_bytes_counts_what_a_step_holds_at_once():
    """Two 4 MiB tensors held together, a third after one is freed: the peak is 8 MiB
    (the benchmarks' allocator-independent memory figure)."""
    def step():
        a = torch.empty(1 << 20)
        b = torch.empty(1 << 20)
        del a
        c = torch.empty(1 << 20)
        return b, c

    peak = peak_allocated_bytes(step)
    assert 8 << 20 <= peak < (8 << 20) + (1 << 16)
