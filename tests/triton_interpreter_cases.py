"""The Triton sliding-window attention kernels (acmix_mm/ops/triton_window.py) run by the
Triton interpreter on CPU tensors, against the unfold definition.

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

from acmix_mm.ops import triton_window  # noqa: E402  (imports Triton: after the check)

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


def test_gpu_check_kernel_stage():
    """benchmarks/gpu_check.py's kernel check (what a GPU machine runs at real sizes) on
    a tiny case: every dtype within its tolerance, one record each."""
    gpu_check = load_script('benchmarks/gpu_check.py')
    checks = gpu_check.Checks(torch.device('cpu'))
    gpu_check.check_kernels(checks, torch.device('cpu'), gpu_check.DRY_KERNEL_CASES)
    assert not checks.failed and len(checks.records) == len(gpu_check.TOLERANCES)
    assert all(r['details']['passed'] for r in checks.records)
