"""Batch normalisation with batch statistics on NCHW-contiguous CPU maps: the native
operator (``csrc/batch_norm.cpp``), which ``layers.NativeBatchNorm2d`` runs where
:func:`batch_norm_nchw_usable` (BatchNorm's own forward elsewhere).

torch's CPU kernel sums each channel of an NCHW-contiguous map in a scalar loop, which
SAN's wide maps of few channels make slow; the native one sums in vectors. It returns
the normalised map with the batch mean and biased variance, from which the caller
updates the running statistics as BatchNorm does.
"""
import torch

from ._native import native_built, native_cpu_fits

OP = 'acmix_mm::batch_norm_nchw'
# An extension built from older sources lacks the op: BatchNorm's own forward then.
BUILT = native_built() and hasattr(torch.ops.acmix_mm, 'batch_norm_nchw')


def batch_norm_nchw_usable(x, weight, bias):
    """Whether :func:`batch_norm_nchw` runs natively: CPU float32 or float64 maps
    (N, C, H, W) in NCHW-contiguous memory with more than one value per channel, weight
    and bias of their dtype, no export or jit trace under way."""
    return (BUILT and native_cpu_fits(x.device, x.dtype) and x.dim() == 4
            and x.is_contiguous() and x.numel() > x.shape[1] and weight is not None
            and bias is not None and weight.dtype == x.dtype and bias.dtype == x.dtype)


def batch_norm_nchw(x, weight, bias, eps):
    """``F.batch_norm(x, None, None, weight, bias, training=True, eps=eps)`` by the
    native operator (where :func:`batch_norm_nchw_usable`), with the batch mean and
    biased variance of each channel (not differentiable): ``(out, mean, var)``."""
    return torch.ops.acmix_mm.batch_norm_nchw(x, weight, bias, eps)


if BUILT:

    @torch.library.register_fake(OP)
    def _forward_fake(input, weight, bias, eps):
        torch._check(input.dim() == 4)
        channels = input.shape[1]
        return input.new_empty(input.shape), input.new_empty(channels), input.new_empty(
            channels)

    @torch.library.register_fake(OP + '_backward')
    def _backward_fake(grad_out, input, weight, mean, var, eps):
        return input.new_empty(input.shape), weight.new_empty(weight.shape), weight.new_empty(
            weight.shape)

    def _setup_context(ctx, inputs, output):
        input, weight, _, eps = inputs
        ctx.mark_non_differentiable(output[1], output[2])
        ctx.save_for_backward(input, weight, output[1], output[2])
        ctx.eps = eps

    def _backward(ctx, grad_out, _mean, _var):
        input, weight, mean, var = ctx.saved_tensors
        grad_in, grad_weight, grad_bias = torch.ops.acmix_mm.batch_norm_nchw_backward(
            grad_out.contiguous(), input, weight, mean, var, ctx.eps)
        return grad_in, grad_weight, grad_bias, None

    torch.library.register_autograd(OP, _backward, setup_context=_setup_context)
