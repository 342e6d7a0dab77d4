"""Linear products of tokens through oneDNN's matrix product: the native operator
(``csrc/linear_of_maps.cpp``) that ACmix's projection of a map
(``layers.acmix.linear_of_tokens``) and ``layers.linear.NativeLinear`` run where
:func:`linear_of_maps_usable`.

It reads tokens that are a view of NCHW planes as they lie and writes contiguous tokens
or planes, where torch's F.linear runs MKL's sgemm (AVX2 kernels on AMD CPUs) and
oneDNN's 1x1 convolution wants channels-last copies. The input's gradient comes back in
the input's layout.
"""
import torch
import torch.nn.functional as F

from ._native import native_built, native_cpu_fits

OP = 'acmix_mm::linear_of_maps'
# An extension built from older sources lacks the op: the convolution then.
BUILT = native_built() and hasattr(torch.ops.acmix_mm, 'linear_of_maps')


def linear_of_maps_usable(x, weight):
    """Whether :func:`linear_of_maps` runs natively: CPU float32 or float64 tokens
    (B, N, K), not empty, of weight's dtype; no autocast, export or jit trace under
    way."""
    return (BUILT and native_cpu_fits(x.device, x.dtype) and x.dim() == 3 and x.numel() > 0
            and weight.dtype == x.dtype and not torch.is_autocast_enabled('cpu'))


def linear_of_maps(x, weight, bias=None, planes=False):
    """``F.linear(x, weight, bias)`` by the native operator (see
    :func:`linear_of_maps_usable`): contiguous tokens (B, N, M), or with ``planes`` a
    view of contiguous NCHW planes (B, M, N). Differentiable in all three."""
    return torch.ops.acmix_mm.linear_of_maps(x, weight, bias, planes)


def linear(x, weight, bias=None):
    """``F.linear(x, weight, bias)`` for inputs (..., K) of any rank, by
    :func:`linear_of_maps` where it is usable (as (1, N, K) tokens where ``x`` is not
    3-d), else ``F.linear``."""
    tokens = x if x.dim() == 3 else x.reshape(1, -1, x.shape[-1])
    if not linear_of_maps_usable(tokens, weight):
        return F.linear(x, weight, bias)
    out = linear_of_maps(tokens, weight, bias, False)
    return out if x.dim() == 3 else out.view(*x.shape[:-1], weight.shape[0])


def _empty_tokens(like, batch, tokens, channels, planes):
    if planes:
        return like.new_empty_strided((batch, tokens, channels), (tokens * channels, 1, tokens))
    return like.new_empty((batch, tokens, channels))


def _are_planes(tokens):
    return tokens.transpose(1, 2).is_contiguous()


if BUILT:

    @torch.library.register_fake(OP)
    def _forward_fake(x, weight, bias, planes):
        torch._check(x.dim() == 3 and weight.dim() == 2)
        return _empty_tokens(x, x.shape[0], x.shape[1], weight.shape[0], planes)

    @torch.library.register_fake(OP + '_backward')
    def _backward_fake(grad_out, x, weight, with_bias, input_grad):
        grad_x = (_empty_tokens(x, *x.shape, _are_planes(x)) if input_grad else
                  x.new_empty(0))
        grad_bias = weight.new_empty(weight.shape[0]) if with_bias else weight.new_empty(0)
        return grad_x, weight.new_empty(weight.shape), grad_bias

    def _setup_context(ctx, inputs, output):
        x, weight, bias, _ = inputs
        ctx.save_for_backward(x, weight)
        ctx.with_bias = bias is not None

    def _backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = torch.ops.acmix_mm.linear_of_maps_backward(
            grad_out, x, weight, ctx.with_bias, ctx.needs_input_grad[0])
        return (grad_x if ctx.needs_input_grad[0] else None, grad_weight,
                grad_bias if ctx.with_bias else None, None)

    torch.library.register_autograd(OP, _backward, setup_context=_setup_context)
