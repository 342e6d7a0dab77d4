"""The Triton kernels (sliding-window attention, acmix_mm/ops/triton_window.py; SAN's patch
aggregation, triton_patchwise.py) run by the Triton interpreter on CPU tensors, against
the unfold definitions.

Not collected by a plain ``pytest`` run (the name does not match ``test_*.py``):
``TRITON_INTERPRET=1`` must be set before Triton is imported, so
tests/test_triton_ops.py runs this module in a pytest process of its own with that set.
"""
import os

import pytest
import torch

from acmix_mm import ops

assert os.environ.get('TRITON_INTERPRET') == '1', 'run through tests/test_triton_ops.py'
from test_native_ops import padded_inputs  # noqa: E402
from test_triton_ops import check_cuda_branch  # noqa: E402

# These import Triton: after the check.
from acmix_mm.ops import triton_patchwise, triton_window  # noqa: E402, F401

from conftest import load_script  # noqa: E402


def triton(query, key, value, kernel_size, stride, scale):
    return torch.ops.acmix_mm.triton_sliding_window_attention(query, key, value, kernel_size,
                                                              stride, scale)[0]


def outputs_and_grads(function, inputs, grad, *options):
    out = function(*inputs, *options)
    return (out, ) + torch.autograd.grad(out, inputs, grad)


# (planes, head_dims, map size before padding, kernel, stride): both kernels and strides,
# head widths below and at a power of two, odd maps that end inside the kernels' tiles
# (8 rows of 16 pixels at these widths), rows longer than one tile (32 pixels).
SHAPES = [(2, 4, (9, 11), 3, 1), (2, 8, (9, 11), 7, 2), (2, 5, (9, 11), 7, 1),
          (1, 6, (9, 11), 3, 2), (1, 4, (5, 40), 3, 1)]


@pytest.mark.parametrize('planes,dims,size,kernel_size,stride', SHAPES)
def test_kernels_equal_the_unfold_definition_in_float64(planes, dims, size, kernel_size,
                                                        stride):
    """Forward and the gradients of query, key and value; the interpreter computes in
    float64 as asked, so the kernels must agree to rounding."""
    inputs = padded_inputs(planes, dims, size, kernel_size, stride)
    scale = dims**-0.5
    expected = ops.sliding_window_attention_reference(*inputs, kernel_size, stride, scale)
    grad = torch.randn_like(expected)
    options = (kernel_size, stride, scale)
    for ours, theirs in zip(outputs_and_grads(triton, inputs, grad, *options),
                            outputs_and_grads(ops.sliding_window_attention_reference,
                                              inputs, grad, *options)):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(dtype):
    """Half inputs, float32 accumulation: the result is the exact one (float64 on the
    same rounded inputs) rounded once more, so it stays within a few units of the half
    type's last place (float16 2**-11, bfloat16 2**-8 relative); the log-sum-exp is
    float32."""
    inputs = padded_inputs(2, 8, (9, 11), 3, 2, dtype=dtype)
    exact = [x.detach().double().requires_grad_() for x in inputs]
    out, lse = torch.ops.acmix_mm.triton_sliding_window_attention(*inputs, 3, 2, 0.35)
    assert out.dtype == dtype and lse.dtype == torch.float32
    grad = torch.randn(out.shape, dtype=torch.float64)
    expected = outputs_and_grads(ops.sliding_window_attention_reference, exact, grad, 3, 2,
                                 0.35)
    got = (out, ) + torch.autograd.grad(out, inputs, grad.to(dtype))
    tolerance = 4 * torch.finfo(dtype).eps
    for ours, theirs in zip(got, expected):
        assert ours.dtype == dtype
        torch.testing.assert_close(ours.double(), theirs, rtol=tolerance, atol=tolerance)


def test_gradcheck():
    inputs = padded_inputs(1, 2, (4, 5), 3, 2)
    # Fast mode: the Jacobian against random vectors (the full one runs the interpreter
    # hundreds of times).
    assert torch.autograd.gradcheck(lambda *x: triton(*x, 3, 2, 0.6), inputs,
                                    fast_mode=True)


def test_opcheck():
    """Schema, fake tensors, autograd registration and AOT dispatch (what torch.compile
    relies on) of both ops."""
    query, key, value = padded_inputs(2, 3, (5, 6), 3, 2, dtype=torch.float32)
    torch.library.opcheck(torch.ops.acmix_mm.triton_sliding_window_attention.default,
                          (query, key, value, 3, 2, 0.5))
    out, lse = torch.ops.acmix_mm.triton_sliding_window_attention(query, key, value, 3, 2,
                                                                  0.5)
    torch.library.opcheck(
        torch.ops.acmix_mm.triton_sliding_window_attention_backward.default,
        (torch.randn_like(out), query.detach(), key.detach(), value.detach(), out.detach(),
         lse, 3, 2, 0.5))


def test_op_refuses_windows_past_the_keys():
    query, key, value = padded_inputs(1, 2, (6, 6), 7, 1)
    with pytest.raises(RuntimeError, match='need keys of at least 12x12'):
        triton(query, key[..., :-1, :], value[..., :-1, :], 7, 1, 1.0)
    with pytest.raises(RuntimeError, match='differ in dtype'):
        triton(query, key.float(), value, 7, 1, 1.0)


def test_layer_path_on_the_kernels_equals_the_pytorch_path(monkeypatch):
    """The CUDA branch of the layer's attention (planes, key offset, output scale and
    reflection padding around the kernel) on the Triton kernels."""
    monkeypatch.setattr(ops, 'sliding_window_attention', triton)
    check_cuda_branch(2, (7, 10))
    assert triton_window.INTERPRETED


def test_gpu_check_kernel_stages():
    """benchmarks/gpu_check.py's kernel checks (what a GPU machine runs at real sizes) on
    a tiny case each: every dtype within its tolerance, one record each."""
    gpu_check = load_script('benchmarks/gpu_check.py')
    checks = gpu_check.Checks(torch.device('cpu'))
    gpu_check.check_kernels(checks, torch.device('cpu'), gpu_check.DRY_KERNEL_CASES)
    gpu_check.check_aggregation(checks, torch.device('cpu'), gpu_check.DRY_AGGREGATE_CASES)
    assert not checks.failed and len(checks.records) == 2 * len(gpu_check.TOLERANCES)
    assert all(r['details']['passed'] for r in checks.records)
    assert sum(r['figure'].startswith('gpu_check.aggregate.') for r in checks.records) == len(
        gpu_check.TOLERANCES)


def aggregate_inputs(batch, channels, groups, hidden_channels, size, kernel_size,
                     dtype=torch.float64):
    """Padded values, the hidden map and fc2 (weight, bias) of a patch aggregation."""
    generator = torch.Generator().manual_seed(0)
    shapes = ((batch, channels, size[0] + kernel_size - 1, size[1] + kernel_size - 1),
              (batch, hidden_channels, *size), (groups * kernel_size**2, hidden_channels),
              (groups * kernel_size**2, ))
    return [torch.randn(*shape, dtype=torch.float64, generator=generator).to(dtype)
            .requires_grad_() for shape in shapes]


def triton_aggregate(*args):
    return torch.ops.acmix_mm.triton_patch_aggregate(*args)


# (batch, channels, groups, hidden channels, map size, kernel): SAN's 7x7 and a 3x3,
# one group and several (each reading channels c, c + G, ...), odd maps, maps that end
# inside a tile (64 pixels a tile at 7x7, 256 at 3x3) and one of several tiles.
AGGREGATE_SHAPES = [(2, 8, 2, 3, (5, 6), 3), (1, 12, 4, 5, (7, 9), 7),
                    (2, 4, 1, 2, (3, 4), 3), (1, 6, 3, 4, (9, 13), 7)]


@pytest.mark.parametrize('batch,channels,groups,hidden_channels,size,kernel_size',
                         AGGREGATE_SHAPES)
def test_patch_aggregate_equals_the_unfold_definition_in_float64(
        batch, channels, groups, hidden_channels, size, kernel_size):
    """Forward and the gradients of value, hidden map, fc2's weight and bias."""
    inputs = aggregate_inputs(batch, channels, groups, hidden_channels, size, kernel_size)
    expected = ops.patch_aggregate_reference(*inputs, kernel_size)
    grad = torch.randn_like(expected)
    for ours, theirs in zip(
            outputs_and_grads(triton_aggregate, inputs, grad, kernel_size),
            outputs_and_grads(ops.patch_aggregate_reference, inputs, grad, kernel_size)):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_patch_aggregate_in_half_precision(dtype):
    """Half inputs: the weights are fc2 in the half type (as cuBLAS gives them), the
    sums accumulate in float32; within a few units of the half type's last place of the
    exact result on the same rounded inputs, relative to its largest magnitude."""
    inputs = aggregate_inputs(2, 8, 2, 3, (5, 6), 3, dtype=dtype)
    exact = [x.detach().double().requires_grad_() for x in inputs]
    out = triton_aggregate(*inputs, 3)
    grad = torch.randn(out.shape, dtype=torch.float64)
    expected = outputs_and_grads(ops.patch_aggregate_reference, exact, grad, 3)
    got = (out, ) + torch.autograd.grad(out, inputs, grad.to(dtype))
    for ours, theirs in zip(got, expected):
        assert ours.dtype == dtype
        error = (ours.double() - theirs).abs().max() / theirs.abs().max()
        assert error < 8 * torch.finfo(dtype).eps, error


def test_patch_aggregate_gradcheck_and_opcheck():
    inputs = aggregate_inputs(1, 4, 2, 2, (3, 4), 3)
    assert torch.autograd.gradcheck(lambda *x: triton_aggregate(*x, 3), inputs,
                                    fast_mode=True)
    inputs = [x.detach().float() for x in inputs]
    torch.library.opcheck(torch.ops.acmix_mm.triton_patch_aggregate.default, (*inputs, 3))
    grad_out = torch.randn(1, 4, 3, 4)
    torch.library.opcheck(torch.ops.acmix_mm.triton_patch_aggregate_backward.default,
                          (grad_out, *inputs, 3))


def test_patch_aggregate_refuses_mismatched_fc2():
    value, hidden, weight, bias = aggregate_inputs(1, 6, 3, 4, (5, 5), 3)
    with pytest.raises(RuntimeError, match='6 value channels do not split into 4 weight'):
        triton_aggregate(value, hidden, torch.randn(36, 4, dtype=torch.float64),
                         torch.randn(36, dtype=torch.float64), 3)
    with pytest.raises(RuntimeError, match=r'fc2 of \(27, 4\) \(bias \(27,\)\) does not map '
                       '3 hidden channels'):
        triton_aggregate(value, hidden[:, :3], weight, bias, 3)
    with pytest.raises(RuntimeError, match='differ in dtype'):
        triton_aggregate(value, hidden.float(), weight, bias, 3)


def test_layer_aggregation_on_the_kernels_equals_the_band_path(monkeypatch):
    """SAN's layer function around the kernels (reflection padding, the casts of fc2 to
    the values' dtype) against its band-by-band PyTorch path."""
    from acmix_mm.layers import patchwise
    # As in SAN, fc2 maps G hidden channels to G groups of weights.
    value, hidden, weight, bias = aggregate_inputs(2, 8, 2, 2, (6, 7), 7)
    value = value.detach()[..., 3:-3, 3:-3].requires_grad_()  # unpadded: the layer pads
    inputs = (value, hidden, weight, bias)
    with ops.native_ops(False):
        expected = patchwise.patch_aggregate(*inputs, 7)
        grad = torch.randn_like(expected)
        expected_grads = torch.autograd.grad(expected, inputs, grad)
    monkeypatch.setattr(patchwise, 'native_serves', lambda tensor: False)
    monkeypatch.setattr(patchwise, 'triton_serves', lambda tensor: True)
    got = patchwise.patch_aggregate(*inputs, 7)
    for ours, theirs in zip((got, ) + torch.autograd.grad(got, inputs, grad),
                            (expected, ) + expected_grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)
