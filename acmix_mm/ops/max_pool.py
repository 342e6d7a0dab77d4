"""SAN's 2x2 max pool at stride 2: the native CPU operator (``csrc/max_pool2x2.cpp``)
and ``F.max_pool2d`` elsewhere.

torch's pool keeps an int64 index per output and its backward scatters into a
zero-filled input gradient; the native one keeps a byte (the argmax's place in the
window) and writes each input gradient once. It gives torch's values and gradients,
ties and NaN included (the first maximum of the window in row-major order; the last
NaN).
"""
import torch
import torch.nn.functional as F

from ._native import native_built, native_cpu_fits

OP = 'acmix_mm::max_pool2x2'
# An extension built from older sources lacks the op: F.max_pool2d then.
BUILT = native_built() and hasattr(torch.ops.acmix_mm, 'max_pool2x2')


def max_pool2x2_usable(x):
    """Whether :func:`max_pool2x2` runs the native operator for ``x``: CPU float32 or
    float64 maps (N, C, H, W) of at least 2x2, no export or jit trace under way (those
    take ``F.max_pool2d``, a standard operator)."""
    return (BUILT and native_cpu_fits(x.device, x.dtype) and x.dim() == 4
            and x.shape[2] >= 2 and x.shape[3] >= 2)


def max_pool2x2(x):
    """``F.max_pool2d(x, 2, 2)``, natively where :func:`max_pool2x2_usable`."""
    if not max_pool2x2_usable(x):
        return F.max_pool2d(x, 2, 2)
    return torch.ops.acmix_mm.max_pool2x2(x)[0]


if BUILT:

    @torch.library.register_fake(OP)
    def _forward_fake(input):
        torch._check(input.dim() == 4)
        shape = (*input.shape[:2], input.shape[2] // 2, input.shape[3] // 2)
        return input.new_empty(shape), input.new_empty(shape, dtype=torch.uint8)

    @torch.library.register_fake(OP + '_backward')
    def _backward_fake(grad_out, argmax, height, width):
        return grad_out.new_empty((*grad_out.shape[:2], height, width))

    def _setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.size = inputs[0].shape[2:]

    def _backward(ctx, grad_out, _):
        (argmax, ) = ctx.saved_tensors
        return torch.ops.acmix_mm.max_pool2x2_backward(grad_out.contiguous(), argmax,
                                                       *ctx.size)

    torch.library.register_autograd(OP, _backward, setup_context=_setup_context)
