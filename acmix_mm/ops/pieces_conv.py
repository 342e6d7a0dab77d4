"""ACmix's convolution path as one grouped convolution from the projection's pieces
(fc and the shift convolution fused): the native CPU operator and its reference.

The projection holds ``P`` pieces (q, k and v heads) of ``d`` channels each; group ``g``
of the convolution reads channel ``g`` of every piece and writes outputs
``g * M .. g * M + M - 1``. The native operator (``csrc/pieces_conv.cpp``) reads the
tokens piece-major and runs across groups in vectors, where oneDNN's grouped
convolution runs groups of 12 inputs and 4 outputs far below its arithmetic rate. It
covers ResNet-ACmix's case: stride 1 or 2, a 3x3 kernel, four outputs per group and ``d`` a
multiple of the vector's lanes (16 float32, 8 float64 values); other cases take
:func:`pieces_conv_reference`.
"""
import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from ._native import native_built, native_cpu_fits

OP = 'acmix_mm::pieces_conv'
OUTPUTS_PER_GROUP = 4
# An extension built from older sources lacks the op: the layers then take F.conv2d.
BUILT = native_built() and hasattr(torch.ops.acmix_mm, 'pieces_conv')


def pieces_conv_reference(tokens, weight, hw_shape, stride=1):
    """The convolution with ``F.conv2d`` on channels-last maps of the pieces: the
    definition the native kernel is tested against.

    Args:
        tokens (Tensor): The projection, piece-major, (B, H*W, P * d).
        weight (Tensor): (M * d, P, k, k), one group per channel d.
        hw_shape (tuple[int]): (H, W).
        stride (int): Stride of the convolution. Default: 1.

    Returns:
        Tensor: (B, H'*W', M * d), zero padding k // 2, H' = ceil(H / stride).
    """
    batch, num_tokens, columns = tokens.shape
    pieces = weight.shape[1]
    head_dims = columns // pieces
    maps = tokens.view(batch, num_tokens, pieces, head_dims).transpose(2, 3).reshape(
        batch, *hw_shape, columns).permute(0, 3, 1, 2)
    out = F.conv2d(maps, weight, None, stride, weight.shape[-1] // 2, groups=head_dims)
    return out.flatten(2).transpose(1, 2)


def pieces_conv_fits(device, dtype, head_dims, channels, kernel_size, stride):
    """Whether the native operator serves a convolution path of this shape, on this
    device and dtype: CPU, float32 or float64 without autocast, 3x3 at stride 1 or 2, four
    outputs per group (``channels == 4 * head_dims``), ``head_dims`` a multiple of the
    lanes, no export or jit trace under way (those take ``F.conv2d``, a standard
    operator)."""
    if not (BUILT and native_cpu_fits(device, dtype)) or torch.is_autocast_enabled('cpu'):
        return False
    lanes = 512 // torch.finfo(dtype).bits  # 64-byte vectors
    return (stride in (1, 2, (1, 1), (2, 2)) and kernel_size in (3, (3, 3))
            and channels == OUTPUTS_PER_GROUP * head_dims and head_dims % lanes == 0)


def pieces_conv_usable(tokens, weight, stride):
    """Whether :func:`pieces_conv` runs the native operator for these arguments."""
    head_dims = tokens.shape[-1] // weight.shape[1]
    return weight.dtype == tokens.dtype and weight.shape[2] == weight.shape[3] and (
        pieces_conv_fits(tokens.device, tokens.dtype, head_dims, weight.shape[0],
                         weight.shape[2], stride))


def pieces_conv(tokens, weight, hw_shape, stride=1):
    """The native operator (see :func:`pieces_conv_usable`). Args and returns as
    :func:`pieces_conv_reference` (k = 3, M = 4; ``stride`` an int or a conv's pair),
    the output a view of NCHW planes; differentiable in ``tokens`` and ``weight``."""
    stride = stride[0] if isinstance(stride, tuple) else stride
    return torch.ops.acmix_mm.pieces_conv(tokens, weight, *hw_shape, stride).transpose(1, 2)


if BUILT:

    @torch.library.register_fake(OP)
    def _forward_fake(tokens, weight, height, width, stride=1):
        torch._check(tokens.dim() == 3 and tokens.shape[1] == height * width)
        out_pixels = -(-height // stride) * -(-width // stride)
        return tokens.new_empty((tokens.shape[0], weight.shape[0], out_pixels))

    @torch.library.register_fake(OP + '_backward')
    def _backward_fake(grad_out, tokens, weight, height, width, stride=1):
        return (torch.empty_like(tokens, memory_format=torch.contiguous_format),
                torch.empty_like(weight, memory_format=torch.contiguous_format))

    def _setup_context(ctx, inputs, output):
        tokens, weight, *options = inputs
        ctx.save_for_backward(tokens, weight)
        ctx.options = options

    def _backward(ctx, grad_out):
        tokens, weight = ctx.saved_tensors
        grad_tokens, grad_weight = torch.ops.acmix_mm.pieces_conv_backward(
            grad_out.contiguous(), tokens, weight, *ctx.options)
        return (grad_tokens, grad_weight) + (None, ) * len(ctx.options)

    torch.library.register_autograd(OP, _backward, setup_context=_setup_context)


# The convolution path on planes (csrc/narrow_pieces_conv.cpp), four groups at a time:
# d = 4 channels a piece, as in SAN-ACmix-19's first stage, where the kernel above would
# need d a multiple of the lanes, and any d a multiple of 4 where the projection is planes.
NARROW_OP = 'acmix_mm::narrow_pieces_conv'
NARROW_BUILT = native_built() and hasattr(torch.ops.acmix_mm, 'narrow_pieces_conv')
NARROW_GROUPS = 4


def narrow_pieces_conv_fits(x, groups, pieces, channels, kernel_size, stride):
    """Whether :func:`narrow_pieces_conv` serves a grouped conv of ``groups`` groups
    (``pieces`` inputs and 4 outputs each, ``channels`` outputs in all) on the planes of
    a projection of tokens ``x``: the op built and on, CPU float32 or float64 without
    autocast, 3x3 at stride 1, groups a multiple of 4 and pieces of 3."""
    return (NARROW_BUILT and native_cpu_fits(x.device, x.dtype)
            and not torch.is_autocast_enabled('cpu') and _pair(stride) == (1, 1)
            and _pair(kernel_size) == (3, 3) and groups % NARROW_GROUPS == 0
            and pieces % 3 == 0 and channels == OUTPUTS_PER_GROUP * groups)


def narrow_pieces_conv_usable(planes, weight, stride):
    """Whether :func:`narrow_pieces_conv` serves the convolution path's grouped conv of
    ``weight`` (M * d, P, k, k) on contiguous piece-major NCHW ``planes`` (channel
    ``p * d + g``): as :func:`narrow_pieces_conv_fits` (M = 4, d a multiple of 4), with
    the weight in the planes' dtype."""
    groups, pieces = weight.shape[0] // OUTPUTS_PER_GROUP, weight.shape[1]
    return (narrow_pieces_conv_fits(planes, groups, pieces, weight.shape[0],
                                    tuple(weight.shape[2:]), stride)
            and weight.dtype == planes.dtype and planes.dim() == 4
            and planes.shape[1] == pieces * groups and planes.is_contiguous())


def narrow_pieces_conv(planes, weight):
    """The native operator (see :func:`narrow_pieces_conv_usable`): the grouped conv
    (groups of 4) of piece-major ``planes`` (B, 4 * P, H, W) with ``weight`` (16, P, 3,
    3), zero padding 1; returns (B, 16, H, W). Differentiable in both."""
    return torch.ops.acmix_mm.narrow_pieces_conv(planes, weight)


if NARROW_BUILT:

    @torch.library.register_fake(NARROW_OP)
    def _narrow_fake(planes, weight):
        # d = weight.shape[0] // 4 channels a piece
        torch._check(planes.dim() == 4 and 4 * planes.shape[1] == weight.shape[0] * weight.shape[1])
        return planes.new_empty((planes.shape[0], weight.shape[0], *planes.shape[2:]))

    @torch.library.register_fake(NARROW_OP + '_backward')
    def _narrow_backward_fake(grad_out, planes, weight):
        return (torch.empty_like(planes, memory_format=torch.contiguous_format),
                torch.empty_like(weight, memory_format=torch.contiguous_format))

    def _narrow_setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    def _narrow_backward(ctx, grad_out):
        planes, weight = ctx.saved_tensors
        return torch.ops.acmix_mm.narrow_pieces_conv_backward(grad_out.contiguous(), planes,
                                                              weight)

    torch.library.register_autograd(NARROW_OP, _narrow_backward,
                                    setup_context=_narrow_setup_context)
