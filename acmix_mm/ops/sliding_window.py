"""Sliding-window attention on padded maps: the native operator and its reference.

Each query attends to the ``k x k`` window of keys and values whose top-left corner is
at ``(y * stride, x * stride)`` of maps that the caller has already padded (by
reflection, for ResNet-ACmix): no masks and no border logic in the kernel. Maps are
laid out as planes of one head, ``(N, d, H, W)`` with ``N = batch * heads``.

The native forward keeps only the log-sum-exp of each query; its backward recomputes
the attention weights from it (``csrc/sliding_window_attention.cpp``, and for CUDA
tensors ``triton_window.py``).
"""
import torch

from ._native import native_built, triton_loaded

OP = 'acmix_mm::sliding_window_attention'
FUSED_OP = 'acmix_mm::reflect_window_attention'
PLUS_CONV_OP = 'acmix_mm::reflect_window_attention_plus_conv'
# An extension built from older sources lacks the op: the two paths apart then.
PLUS_CONV_BUILT = native_built() and hasattr(torch.ops.acmix_mm,
                                             'reflect_window_attention_plus_conv')


def sliding_window_attention_reference(query, key, value, kernel_size, stride, scale):
    """The operator written with ``unfold`` (keys and values copied k*k-fold): the
    straightforward definition the native kernels are tested against.

    Args:
        query (Tensor): (N, d, H', W').
        key (Tensor): Padded keys, (N, d, Hp, Wp), with ``(H' - 1) * stride + k <= Hp``
            (and the same for the widths).
        value (Tensor): Padded values, shaped as ``key``.
        kernel_size (int): Window side k.
        stride (int): Step between the windows of neighbouring queries.
        scale (float): Factor of the logits (``d ** -0.5`` as usual).

    Returns:
        Tensor: (N, d, H', W').
    """
    out_h, out_w = query.shape[2:]

    def windows(x):  # (N, d, Hp, Wp) -> (N, d, k*k, H', W')
        x = x.unfold(2, kernel_size, stride).unfold(3, kernel_size, stride)
        return x[:, :, :out_h, :out_w].flatten(4).permute(0, 1, 4, 2, 3)

    logits = (query.unsqueeze(2) * windows(key)).sum(1) * scale
    return (logits.softmax(1).unsqueeze(1) * windows(value)).sum(2)


def sliding_window_attention(query, key, value, kernel_size, stride, scale):
    """Sliding-window attention on padded maps; the native kernel for CPU tensors
    where it is built and the Triton kernel for CUDA tensors where it is loaded, else
    :func:`sliding_window_attention_reference`.

    Args and returns as :func:`sliding_window_attention_reference`. Differentiable in
    ``query``, ``key`` and ``value``; float32 and float64 (and float16 and bfloat16 on
    CUDA, accumulated in float32).
    """
    if native_built() and query.device.type == 'cpu':
        return torch.ops.acmix_mm.sliding_window_attention(query, key, value, kernel_size,
                                                           stride, scale)[0]
    if triton_loaded() and query.device.type == 'cuda':
        return torch.ops.acmix_mm.triton_sliding_window_attention(query, key, value,
                                                                  kernel_size, stride,
                                                                  scale)[0]
    return sliding_window_attention_reference(query, key, value, kernel_size, stride, scale)


def reflect_window_attention(qkv, hw_shape, num_heads, kernel_size, stride, key_offset,
                             out_scale, channel_major, scale):
    """ResNet-ACmix's attention path in one native operator (CPU): queries, keys less
    their offset and values times ``out_scale`` taken from the projection and padded
    by reflection inside, then :func:`sliding_window_attention`.

    Args:
        qkv (Tensor): The projection (B, H*W, 3*C): q, k, v heads, or channel-major.
        hw_shape (tuple[int]): (H, W).
        num_heads (int): Heads.
        kernel_size (int): Window side k (padding k // 2).
        stride (int): Queries every ``stride`` pixels.
        key_offset (Tensor): (H*W, head_dims), subtracted from every head's keys.
        out_scale (Tensor): One element, the factor of the output.
        channel_major (bool): Layout of ``qkv`` (see ``acmix.to_channel_major``).
        scale (float): Factor of the logits.

    Returns:
        Tensor: (B * heads, head_dims, H', W'), H' = ceil(H / stride). Differentiable in
        ``qkv``, ``key_offset`` and ``out_scale``.
    """
    return torch.ops.acmix_mm.reflect_window_attention(qkv, key_offset, out_scale, num_heads,
                                                       *hw_shape, kernel_size, stride,
                                                       channel_major, scale)[0]


def reflect_window_attention_plus_conv(qkv, hw_shape, num_heads, kernel_size, key_offset,
                                       out_scale, conv_weight, scale):
    """ResNet-ACmix's layer at stride 1 in one native operator (CPU): the attention of
    :func:`reflect_window_attention` plus the convolution path
    (:func:`~acmix_mm.ops.pieces_conv.narrow_pieces_conv` of the same projection with
    ``conv_weight``), the sum and its gradient taken as the convolution stores them,
    without passes of their own.

    Args:
        qkv (Tensor): The projection (B, H*W, 3*C): q, k, v heads, a view of NCHW planes
            (B, 3*C, H, W).
        hw_shape (tuple[int]): (H, W).
        num_heads (int): Heads.
        kernel_size (int): The attention's window side k.
        key_offset (Tensor): (H*W, head_dims), subtracted from every head's keys.
        out_scale (Tensor): One element, the factor of the attention's output.
        conv_weight (Tensor): (C, 12, 3, 3) for q, k, v of 4 heads: the convolution
            path's grouped conv on the projection's piece-major planes.
        scale (float): Factor of the logits.

    Returns:
        Tensor: (B, C, H, W). Differentiable in ``qkv``, ``key_offset``, ``out_scale``
        and ``conv_weight``.
    """
    return torch.ops.acmix_mm.reflect_window_attention_plus_conv(qkv, key_offset, out_scale,
                                                                 conv_weight, num_heads,
                                                                 *hw_shape, kernel_size,
                                                                 scale)[0]


def window_outputs_like(query, key, value, kernel_size, stride, lse_dtype):
    """The output and log-sum-exp of a sliding-window attention op, uninitialised, after
    checking the shapes: the fake implementation of every such op (C++ and Triton) and
    the Triton op's allocation.

    Args:
        query, key, value (Tensor): As :func:`sliding_window_attention_reference`.
        kernel_size (int): Window side k.
        stride (int): Step between the windows of neighbouring queries.
        lse_dtype (torch.dtype): The log-sum-exp's dtype (the op's accumulation type).

    Returns:
        tuple[Tensor]: (N, d, H', W') like ``query``, and (N, H', W').
    """
    torch._check(query.dim() == 4 and key.dim() == 4 and key.shape == value.shape)
    needed = [(query.shape[i] - 1) * stride + kernel_size for i in (2, 3)]
    for dim in (0, 1):  # one check each: under torch.compile the sizes may be symbols
        torch._check(needed[dim] <= key.shape[2 + dim],
                     lambda: f'the windows need keys of at least {needed[0]}x{needed[1]}')
    out = torch.empty_like(query, memory_format=torch.contiguous_format)
    lse = query.new_empty((query.shape[0], query.shape[2], query.shape[3]), dtype=lse_dtype)
    return out, lse


def window_grads_like(query, key, value):
    """The gradients of query, key and value, uninitialised: the fake implementation of
    every sliding-window attention backward op."""
    return tuple(
        torch.empty_like(x, memory_format=torch.contiguous_format) for x in (query, key, value))


def register_window_autograd(op, backward_op):
    """Registers the autograd formula of a sliding-window attention op (the C++ one, the
    Triton one): saves the inputs, the output and the log-sum-exp, and backward calls
    ``backward_op(grad_out, query, key, value, out, lse, kernel_size, stride, scale)``.

    Args:
        op (str): The forward op's qualified name, ``'namespace::name'``.
        backward_op (callable): The backward op, returning the gradients of query, key
            and value.
    """

    def setup_context(ctx, inputs, output):
        query, key, value, kernel_size, stride, scale = inputs
        out, lse = output
        # The log-sum-exp is for the backward pass only.
        ctx.mark_non_differentiable(lse)
        ctx.save_for_backward(query, key, value, out, lse)
        ctx.options = (kernel_size, stride, scale)

    def backward(ctx, grad_out, grad_lse):
        query, key, value, out, lse = ctx.saved_tensors
        grads = backward_op(grad_out, query, key, value, out, lse, *ctx.options)
        return tuple(grads) + (None, None, None)

    torch.library.register_autograd(op, backward, setup_context=setup_context)


if native_built():

    @torch.library.register_fake(OP)
    def _forward_fake(query, key, value, kernel_size, stride, scale):
        return window_outputs_like(query, key, value, kernel_size, stride, query.dtype)

    @torch.library.register_fake(OP + '_backward')
    def _backward_fake(grad_out, query, key, value, out, lse, kernel_size, stride, scale):
        return window_grads_like(query, key, value)

    register_window_autograd(OP, torch.ops.acmix_mm.sliding_window_attention_backward)

    @torch.library.register_fake(FUSED_OP)
    def _fused_forward_fake(qkv, key_offset, out_scale, num_heads, height, width,
                            kernel_size, stride, channel_major, scale):
        torch._check(qkv.dim() == 3 and qkv.shape[1] == height * width)
        torch._check(qkv.shape[2] % (3 * num_heads) == 0)
        batch, dims = qkv.shape[0], qkv.shape[2] // (3 * num_heads)
        out_h, out_w = -(-height // stride), -(-width // stride)
        out = qkv.new_empty((batch * num_heads, dims, out_h, out_w))
        return out, qkv.new_empty((batch * num_heads, out_h, out_w))

    @torch.library.register_fake(FUSED_OP + '_backward')
    def _fused_backward_fake(grad_out, qkv, key_offset, out_scale, out, lse, *options):
        # In the projection's layout: laid out as planes (B, 3C, H*W), a tensor of its own
        # rather than a view (see large_tensors.h), the offset's then a view of (d, H*W)
        # planes; else contiguous tokens and offset.
        if not qkv.is_contiguous() and qkv.transpose(1, 2).is_contiguous():
            return (qkv.new_empty_strided(qkv.shape, qkv.stride()),
                    key_offset.new_empty((key_offset.shape[1], key_offset.shape[0])).t(),
                    torch.empty_like(out_scale))
        return (torch.empty_like(qkv, memory_format=torch.contiguous_format),
                torch.empty_like(key_offset, memory_format=torch.contiguous_format),
                torch.empty_like(out_scale))

    def _fused_setup_context(ctx, inputs, output):
        qkv, key_offset, out_scale, *options = inputs
        out, lse = output
        ctx.mark_non_differentiable(lse)
        # The projection, not its padded planes: backward packs them again.
        ctx.save_for_backward(qkv, key_offset, out_scale, out, lse)
        ctx.options = options

    def _fused_backward(ctx, grad_out, grad_lse):
        qkv, key_offset, out_scale, out, lse = ctx.saved_tensors
        grads = torch.ops.acmix_mm.reflect_window_attention_backward(
            grad_out, qkv, key_offset, out_scale, out, lse, *ctx.options)
        return grads + (None, ) * 7

    torch.library.register_autograd(FUSED_OP, _fused_backward,
                                    setup_context=_fused_setup_context)

if PLUS_CONV_BUILT:

    @torch.library.register_fake(PLUS_CONV_OP)
    def _plus_conv_fake(qkv, key_offset, out_scale, conv_weight, num_heads, height, width,
                        kernel_size, scale):
        _, lse = _fused_forward_fake(qkv, key_offset, out_scale, num_heads, height, width,
                                     kernel_size, 1, False, scale)
        out = qkv.new_empty((qkv.shape[0], conv_weight.shape[0], height, width))
        return out, lse

    @torch.library.register_fake(PLUS_CONV_OP + '_backward')
    def _plus_conv_backward_fake(grad_out, qkv, key_offset, out_scale, conv_weight, *rest):
        return _fused_backward_fake(grad_out, qkv, key_offset, out_scale, None, None) + (
            torch.empty_like(conv_weight), )

    def _plus_conv_setup_context(ctx, inputs, output):
        qkv, key_offset, out_scale, conv_weight, *options = inputs
        _, lse = output
        ctx.mark_non_differentiable(lse)
        # The attention's output is not kept: the backward pass needs its weights only.
        ctx.save_for_backward(qkv, key_offset, out_scale, conv_weight, lse)
        ctx.options = options

    def _plus_conv_backward(ctx, grad_out, grad_lse):
        grads = torch.ops.acmix_mm.reflect_window_attention_plus_conv_backward(
            grad_out, *ctx.saved_tensors, *ctx.options)
        return grads + (None, ) * 5

    torch.library.register_autograd(PLUS_CONV_OP, _plus_conv_backward,
                                    setup_context=_plus_conv_setup_context)
