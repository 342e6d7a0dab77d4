"""Copies between NCHW maps and channels-last ones (or planes and tokens) through the
native batched transpose (``csrc/batched_transpose.cpp``): blocks of 16 x 16 values
transposed in registers, where torch's copy to channels-last runs its generic strided
loop (64 channels at 128x160: 1.1 ms there, 0.08 ms here; AMD EPYC, 2 cores). Elsewhere
(:func:`~acmix_mm.ops._native.native_cpu_fits` false) torch's own copy."""
import torch

from ._native import native_built, native_cpu_fits

OP = 'acmix_mm::batched_transpose'
# An extension built from older sources lacks the op: torch's copy then.
BUILT = native_built() and hasattr(torch.ops.acmix_mm, 'batched_transpose')


def _native_fits(x, dim):
    return BUILT and native_cpu_fits(x.device, x.dtype) and x.dim() == dim


def to_channels_last(maps):
    """``maps.contiguous(memory_format=torch.channels_last)``."""
    if not (_native_fits(maps, 4) and maps.is_contiguous()):
        return maps.contiguous(memory_format=torch.channels_last)
    batch, channels, height, width = maps.shape
    tokens = torch.ops.acmix_mm.batched_transpose(maps.view(batch, channels, -1))
    return tokens.view(batch, height, width, channels).permute(0, 3, 1, 2)


def to_channels_first(maps):
    """``maps.contiguous()`` (NCHW)."""
    if not (_native_fits(maps, 4) and maps.is_contiguous(memory_format=torch.channels_last)):
        return maps.contiguous()
    batch, channels, height, width = maps.shape
    planes = torch.ops.acmix_mm.batched_transpose(
        maps.permute(0, 2, 3, 1).reshape(batch, height * width, channels))
    return planes.view(batch, channels, height, width)


class _ContiguousTokens(torch.autograd.Function):
    """Tokens (B, N, C) that are a view of planes (B, C, N), copied contiguous by the
    batched transpose; the gradient goes back as planes, so that where the planes have
    other consumers the gradients add up in one layout (a sum of mixed layouts runs
    torch's strided loop)."""

    @staticmethod
    def forward(ctx, tokens):
        return torch.ops.acmix_mm.batched_transpose(tokens.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        return torch.ops.acmix_mm.batched_transpose(grad).transpose(1, 2)


def contiguous_tokens(tokens):
    """``tokens.contiguous()``, for tokens (B, N, C) that are a view of NCHW planes
    (the projection as :func:`~acmix_mm.layers.acmix.linear_of_tokens` writes it with
    ``planes``) natively (see :class:`_ContiguousTokens`)."""
    if not (_native_fits(tokens, 3) and tokens.transpose(1, 2).is_contiguous()
            and not tokens.is_contiguous()):
        return tokens.contiguous()
    return _ContiguousTokens.apply(tokens)


if BUILT:

    @torch.library.register_fake(OP)
    def _fake(input):
        torch._check(input.dim() == 3)
        return input.new_empty((input.shape[0], input.shape[2], input.shape[1]))
