"""SAN's patchwise attention on padded maps: the two native operators and their
references.

``patch_hidden`` is the first linear layer (fc1) of each pixel's patch: the query at the
pixel and the ``k x k`` patch of keys whose top-left corner it is in a padded key map,
normalised by an affine map per patch channel (the norm's scale and shift) and passed
through ReLU, read in place rather than unfolded k*k-fold. ``patch_moments`` gives the
batch statistics of those patch channels that the norm needs.

In ``patch_aggregate`` each output pixel sums the ``k x k`` patch of values whose
top-left corner it is, in a map the caller has already padded (by reflection, for SAN),
value channel c with weight channel c mod G; the G x k*k weights of a pixel are SAN's
last linear layer (fc2) of its hidden vector. The native operators make neither the
unfolded patches nor those weights (``csrc/patchwise_attention.cpp``): both passes keep
only their inputs. For CUDA tensors ``patch_aggregate`` has Triton kernels
(``triton_patchwise.py``); the other two run on the CPU only.
"""
import torch
import torch.nn.functional as F

from ._native import native_built, triton_loaded

OP = 'acmix_mm::patch_aggregate'
HIDDEN_OP = 'acmix_mm::patch_hidden'
MOMENTS_OP = 'acmix_mm::patch_moments'


def patch_moments_reference(query, key, centres_q, centres_k, kernel_size):
    """Sums of ``x - centre`` and of its square over the batch and the map for every
    patch channel (ordered as :func:`patch_hidden_reference`'s), with the key patches
    unfolded k*k-fold: the definition the native kernel is tested against.

    Args:
        query (Tensor): (B, r, H, W).
        key (Tensor): Padded keys, (B, r, H + k - 1, W + k - 1).
        centres_q (Tensor): A constant per query channel, (r, ), subtracted first (the
            sums of squares then do not cancel); no gradient flows to it.
        centres_k (Tensor): The same for the key channels.
        kernel_size (int): Patch side k.

    Returns:
        Tensor: (2, r * (k*k + 1)) in float64.
    """
    batch, channels, height, width = query.shape
    q = (query - centres_q.detach()[:, None, None]).double().transpose(0, 1).flatten(1)
    k = F.unfold((key - centres_k.detach()[:, None, None]).double(), kernel_size)
    k = k.view(batch, channels * kernel_size**2, -1).transpose(0, 1).flatten(1)
    patches = torch.cat([q, k])
    return torch.stack([patches.sum(1), patches.square().sum(1)])


def patch_moments(query, key, centres_q, centres_k, kernel_size):
    """The batch statistics of SAN's patch channels, the native kernel (CPU, float32 and
    float64 inputs, sums in float64). Args and returns as
    :func:`patch_moments_reference`; differentiable in ``query`` and ``key``."""
    return torch.ops.acmix_mm.patch_moments(query, key, centres_q, centres_k, kernel_size)


def patch_hidden_reference(query, key, scale, shift, weight, kernel_size):
    """``fc1(relu(scale * [q, k_patch] + shift))`` as hszhao/SAN computes it (the key
    patches unfolded k*k-fold, fc1 a 1x1 convolution): the definition the native kernel
    is tested against.

    Args:
        query (Tensor): (B, r, H, W).
        key (Tensor): Padded keys, (B, r, H + k - 1, W + k - 1).
        scale (Tensor): Factor of each patch channel, (r * (k*k + 1), ): the r query
            channels, then key channel c at patch position j at ``r + c * k*k + j``.
        shift (Tensor): Offset of each patch channel, as ``scale``.
        weight (Tensor): fc1's weight, (G', r * (k*k + 1)).
        kernel_size (int): Patch side k.

    Returns:
        Tensor: (B, G', H, W).
    """
    batch, _, height, width = query.shape
    patches = torch.cat([query.view(batch, -1, 1, height * width),
                         F.unfold(key, kernel_size).view(batch, -1, 1, height * width)], 1)
    patches = torch.relu(patches * scale[:, None, None] + shift[:, None, None])
    return F.conv2d(patches, weight[:, :, None, None]).view(batch, -1, height, width)


def patch_hidden(query, key, scale, shift, weight, kernel_size):
    """SAN's first weight layer over each pixel's patch, the native kernel (CPU, float32
    and float64). Args and returns as :func:`patch_hidden_reference`; differentiable in
    all five tensors."""
    return torch.ops.acmix_mm.patch_hidden(query, key, scale, shift, weight, kernel_size)


def patch_aggregate_reference(value, hidden, weight, bias, kernel_size):
    """The operator as hszhao/SAN computes it (fc2 as a 1x1 convolution, then its
    ``aggregation_refpad`` on patches unfolded k*k-fold): the definition the native
    kernel is tested against.

    Args:
        value (Tensor): Padded values, (B, C, H + k - 1, W + k - 1).
        hidden (Tensor): The input of fc2, (B, G', H, W).
        weight (Tensor): fc2's weight, (G * k*k, G'), rows ordered (group, position).
        bias (Tensor): fc2's bias, (G * k*k, ).
        kernel_size (int): Patch side k.

    Returns:
        Tensor: (B, C, H, W).
    """
    batch, channels = value.shape[:2]
    height, width = hidden.shape[2:]
    weights = F.conv2d(hidden, weight[:, :, None, None], bias)
    weights = weights.view(batch, -1, kernel_size**2, height * width)
    # SAN's kernel reads weight channel c % G for value channel c.
    weights = weights.repeat(1, channels // weights.shape[1], 1, 1)
    patches = F.unfold(value, kernel_size).view(batch, channels, kernel_size**2, -1)
    return (patches * weights).sum(2).view(batch, channels, height, width)


def patch_aggregate(value, hidden, weight, bias, kernel_size):
    """SAN's aggregation with fc2 folded in: the native kernel for CPU tensors (float32
    and float64) where it is built and the Triton kernels for CUDA tensors (also float16
    and bfloat16, accumulated in float32) where they are loaded, else
    :func:`patch_aggregate_reference`. Args and returns as the reference; differentiable
    in all four tensors."""
    if native_built() and value.device.type == 'cpu':
        return torch.ops.acmix_mm.patch_aggregate(value, hidden, weight, bias, kernel_size)
    if triton_loaded() and value.device.type == 'cuda':
        return torch.ops.acmix_mm.triton_patch_aggregate(value, hidden, weight, bias,
                                                         kernel_size)
    return patch_aggregate_reference(value, hidden, weight, bias, kernel_size)


def aggregate_output_like(value, hidden, kernel_size):
    """The output of a patch-aggregation op, uninitialised, after checking the shapes:
    the fake implementation of each such op (C++ and Triton) and the Triton op's
    allocation."""
    torch._check(value.dim() == 4 and hidden.dim() == 4)
    torch._check(value.shape[2] == hidden.shape[2] + kernel_size - 1)
    torch._check(value.shape[3] == hidden.shape[3] + kernel_size - 1)
    return value.new_empty((value.shape[0], value.shape[1], hidden.shape[2], hidden.shape[3]))


def grads_like(*tensors):
    """Gradients of ``tensors``, uninitialised and contiguous: the fake implementation of
    the patchwise backward ops."""
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for x in tensors)


def register_patch_autograd(op, constants=0):
    """Registers the autograd formula of a patchwise op (the C++ ones, the Triton one)
    whose backward op, ``op + '_backward'``, takes the output's gradient, the op's tensor
    inputs (saved: the backward passes recompute the rest) and its kernel size; the last
    ``constants`` tensor inputs get no gradient.

    Args:
        op (str): The forward op's qualified name, ``'namespace::name'``.
        constants (int): Trailing tensor inputs without a gradient. Default: 0.
    """
    namespace, name = op.split('::')
    backward_op = getattr(getattr(torch.ops, namespace), name + '_backward')

    def setup_context(ctx, inputs, output):
        *tensors, kernel_size = inputs
        ctx.save_for_backward(*tensors)
        ctx.kernel_size = kernel_size

    def backward(ctx, grad):
        grads = backward_op(grad, *ctx.saved_tensors, ctx.kernel_size)
        return tuple(grads) + (None, ) * (constants + 1)

    torch.library.register_autograd(op, backward, setup_context=setup_context)


if native_built():

    @torch.library.register_fake(OP)
    def _forward_fake(value, hidden, weight, bias, kernel_size):
        return aggregate_output_like(value, hidden, kernel_size)

    @torch.library.register_fake(OP + '_backward')
    def _backward_fake(grad_out, value, hidden, weight, bias, kernel_size):
        return grads_like(value, hidden, weight, bias)

    @torch.library.register_fake(HIDDEN_OP)
    def _hidden_fake(query, key, scale, shift, weight, kernel_size):
        torch._check(query.dim() == 4 and key.dim() == 4 and weight.dim() == 2)
        torch._check(key.shape[2] == query.shape[2] + kernel_size - 1)
        torch._check(key.shape[3] == query.shape[3] + kernel_size - 1)
        return query.new_empty((query.shape[0], weight.shape[0], query.shape[2],
                                query.shape[3]))

    @torch.library.register_fake(HIDDEN_OP + '_backward')
    def _hidden_backward_fake(grad_hidden, query, key, scale, shift, weight, kernel_size):
        return grads_like(query, key, scale, shift, weight)

    @torch.library.register_fake(MOMENTS_OP)
    def _moments_fake(query, key, centres_q, centres_k, kernel_size):
        torch._check(query.dim() == 4 and key.dim() == 4)
        return query.new_empty((2, query.shape[1] * (kernel_size**2 + 1)),
                               dtype=torch.float64)

    @torch.library.register_fake(MOMENTS_OP + '_backward')
    def _moments_backward_fake(grad_sums, query, key, centres_q, centres_k, kernel_size):
        return grads_like(query, key)

    register_patch_autograd(OP)
    register_patch_autograd(HIDDEN_OP)
    # The centres get no gradient, as they are detached in the reference.
    register_patch_autograd(MOMENTS_OP, constants=2)
