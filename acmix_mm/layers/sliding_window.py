"""Sliding-window (local) attention without unfolding keys and values k*k-fold.

Every query attends to the ``k x k`` neighbourhood around it, on a map padded by
reflection (as the official ResNet-ACmix). The straightforward formulation unfolds keys
and values into ``k*k`` copies (49 for k=7): gigabytes at detection resolutions, and
slow. Here the output grid is cut into ``b x b`` blocks of queries; each block gathers
once the ``span x span`` halo of keys its queries can see (reflection padding folded into
the gather indices), and one fused attention call runs all blocks with a fixed mask that
keeps each query to its own ``k x k`` window. Keys are gathered about 3x instead of 49x,
and the attention weights are never materialised, so memory stays near the size of the
inputs.
"""
import functools

import torch
import torch.nn.functional as F

from .. import ops
from ..errors import ConfigError


def _reflect(index, size):
    # Reflection without repeating the edge, as nn.ReflectionPad2d.
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def block_layout(height, width, kernel_size, stride, block, device):
    """Gather indices and the mask for one map size, cached (sizes repeat) except while
    torch.compile or torch.export traces: the tensors made then are the tracer's own,
    and a cache would hand them to later eager calls."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return _block_layout.__wrapped__(height, width, kernel_size, stride, block, device)
    if torch.jit.is_tracing():  # sizes are tensors then; the layout is fixed per size
        height, width = int(height), int(width)
    return _block_layout(height, width, kernel_size, stride, block, device)


def check_map_size(height, width, kernel_size):
    """Refuse maps too small for the reflection padding of a ``kernel_size`` window."""
    radius = kernel_size // 2
    if min(height, width) <= radius:
        raise ConfigError(
            f'Sliding-window attention with kernel {kernel_size} pads by reflection, '
            f'which needs feature maps larger than {radius} pixels; got {height}x'
            f'{width}. Use a larger input image.')


@functools.lru_cache(maxsize=64)
def _block_layout(height, width, kernel_size, stride, block, device):
    radius = kernel_size // 2
    check_map_size(height, width, kernel_size)
    out_h, out_w = -(-height // stride), -(-width // stride)
    blocks_h, blocks_w = -(-out_h // block), -(-out_w // block)
    span = stride * (block - 1) + kernel_size

    # Output slots of all blocks: (blocks_h, blocks_w, block, block) -> query pixel.
    slot_y = (torch.arange(blocks_h)[:, None] * block + torch.arange(block)).view(
        blocks_h, 1, block, 1)
    slot_x = (torch.arange(blocks_w)[:, None] * block + torch.arange(block)).view(
        1, blocks_w, 1, block)
    query_index = (slot_y.clamp(max=out_h - 1) * stride * width +
                   slot_x.clamp(max=out_w - 1) * stride)
    # Key halo of all blocks: (blocks_h, blocks_w, span, span) -> key pixel, with the
    # reflection padding applied to the indices. Rows past the padded map are only
    # seen by padding queries; they are clamped into range.
    key_y = (torch.arange(blocks_h)[:, None] * block * stride + torch.arange(span) -
             radius).view(blocks_h, 1, span, 1)
    key_x = (torch.arange(blocks_w)[:, None] * block * stride + torch.arange(span) -
             radius).view(1, blocks_w, 1, span)
    key_y = _reflect(key_y.clamp(max=height - 1 + radius), height).clamp(0, height - 1)
    key_x = _reflect(key_x.clamp(max=width - 1 + radius), width).clamp(0, width - 1)
    key_index = key_y * width + key_x
    # Where each output pixel sits among the block slots.
    slot_index = torch.arange(query_index.numel()).view(query_index.shape)
    output_index = slot_index.permute(0, 2, 1, 3).reshape(
        blocks_h * block, blocks_w * block)[:out_h, :out_w]
    # Query slot (qy, qx) sees halo key (ky, kx) when both offsets are inside the window.
    offset_y = torch.arange(span)[None, :] - stride * torch.arange(block)[:, None]
    inside_y = (offset_y >= 0) & (offset_y < kernel_size)
    mask = (inside_y[:, None, :, None] & inside_y[None, :, None, :]).reshape(
        block * block, span * span)
    # And the other way round: the output pixel of each slot, a spare row past the
    # output for the padding slots of the edge blocks.
    slot_pixel = torch.full((slot_index.numel(), ), out_h * out_w)
    slot_pixel[output_index.flatten()] = torch.arange(out_h * out_w)
    return dict(
        query_index=query_index.flatten().to(device),
        key_index=key_index.flatten().to(device),
        output_index=output_index.flatten().to(device),
        slot_pixel=slot_pixel.to(device),
        num_out=out_h * out_w,
        mask=torch.zeros(mask.shape, device=device).masked_fill(~mask.to(device),
                                                                 float('-inf')),
        out_shape=(out_h, out_w),
        num_blocks=blocks_h * blocks_w,
        slots=(block * block, span * span))


_FLASH_CPU = getattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu', None)
_FLASH_CPU_BACKWARD = getattr(torch.ops.aten,
                              '_scaled_dot_product_flash_attention_for_cpu_backward', None)


def _chunks(num_blocks, chunk_blocks):
    return [(i, min(i + chunk_blocks, num_blocks))
            for i in range(0, num_blocks, chunk_blocks)]


def split_qkv(qkv, num_heads, channel_major):
    """Views q, k, v of shape (B, N, heads, d) of a packed projection (B, N, 3*C):
    piece-major (q heads, k heads, v heads) or channel-major (see
    ``acmix.to_channel_major``)."""
    batch, num_tokens, channels = qkv.shape
    head_dims = channels // (3 * num_heads)
    if channel_major:
        return qkv.view(batch, num_tokens, head_dims, 3, num_heads).permute(
            0, 1, 3, 4, 2).unbind(2)
    return qkv.view(batch, num_tokens, 3, num_heads, head_dims).unbind(2)


class _ChunkedBlockAttention(torch.autograd.Function):
    """Block attention over chunks of blocks, gathering each chunk on the fly.

    Takes the packed projection and returns its gradient as one tensor of its layout
    (not three gradients of q, k and v that autograd would stack and copy). Only the
    projection, the output and the log-sum-exp are kept for backward; the 3x gathered
    keys and values (the key offset and the output scale applied to them) exist one
    chunk at a time, in forward and again in backward, so memory stays near the size of
    the inputs. Output rows are written in place, so no reordering copy is made.
    """

    @staticmethod
    def forward(ctx, qkv, key_offset, out_scale, query_index, key_index, slot_pixel,
                mask, num_out, num_heads, channel_major, chunk_blocks):
        # Only tensors and numbers as arguments, so that the function can be traced.
        query, key, value = split_qkv(qkv, num_heads, channel_major)
        batch, _, heads, dims = query.shape
        queries = mask.shape[0]
        num_blocks = query_index.numel() // queries
        # One spare row takes the padding slots of the edge blocks.
        out = qkv.new_empty(batch, num_out + 1, heads, dims)
        logsumexps = []
        for first, last in _chunks(num_blocks, chunk_blocks):
            q, k, v = _gather_chunk(query, key, value, key_offset,
                                    (query_index, key_index), mask.shape, first, last)
            if out_scale is not None:  # alpha * attention(q, k, v) = attention(q, k, alpha v)
                v.mul_(out_scale)
            chunk_out, logsumexp = _FLASH_CPU(q, k, v, 0.0, False, attn_mask=mask)
            out.index_copy_(1, slot_pixel[first * queries:last * queries],
                            chunk_out.transpose(1, 2).reshape(batch, -1, heads, dims))
            logsumexps.append(logsumexp)
        out = out[:, :num_out]
        ctx.options = (num_heads, channel_major, chunk_blocks)
        ctx.save_for_backward(qkv, key_offset, out_scale, query_index, key_index,
                              slot_pixel, mask, out, *logsumexps)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (qkv, key_offset, out_scale, query_index, key_index, slot_pixel, mask, out,
         *logsumexps) = ctx.saved_tensors
        num_heads, channel_major, chunk_blocks = ctx.options
        query, key, value = split_qkv(qkv, num_heads, channel_major)
        batch, num_out, heads, dims = out.shape
        queries, keys = mask.shape
        num_blocks = query_index.numel() // queries
        # Padded with a zero row, which the padding slots read: they pass nothing on.
        padded_grad = grad_out.new_empty(batch, num_out + 1, heads, dims)
        padded_grad[:, :num_out] = grad_out
        padded_grad[:, num_out] = 0
        # Gradients of q, k and alpha * v, summed over the blocks that read each pixel.
        grads = [torch.zeros_like(query, memory_format=torch.contiguous_format)
                 for _ in range(3)]
        for (first, last), logsumexp in zip(_chunks(num_blocks, chunk_blocks),
                                            logsumexps):
            q, k, v = _gather_chunk(query, key, value, key_offset,
                                    (query_index, key_index), mask.shape, first, last)
            if out_scale is not None:
                v.mul_(out_scale)
            slots = slot_pixel[first * queries:last * queries]

            def blocks(x, index):
                x = x.index_select(1, index)
                return x.view(-1, queries, heads, dims).transpose(1, 2)

            # Only the spare row holds the padding slots' outputs, and it is not kept:
            # they read a real row instead, which their zero gradient makes harmless.
            chunk_grads = _FLASH_CPU_BACKWARD(
                blocks(padded_grad, slots), q, k, v,
                blocks(out, slots.clamp(max=num_out - 1)), logsumexp, 0.0, False,
                attn_mask=mask)
            for grad, chunk_grad, index, length in zip(
                    grads, chunk_grads, (query_index, key_index, key_index),
                    (queries, keys, keys)):
                grad.index_add_(1, index[first * length:last * length],
                                chunk_grad.transpose(1, 2).reshape(batch, -1, heads, dims))
        del padded_grad
        grad_offset = grad_scale = None
        if ctx.needs_input_grad[1]:
            grad_offset = -grads[1].sum((0, 2))
        if out_scale is not None:
            # d/d alpha of attention(q, k, alpha v) = sum of v . dL/d(alpha v)
            if ctx.needs_input_grad[2]:
                grad_scale = torch.einsum('bnhd,bnhd->', grads[2],
                                          value).view_as(out_scale)
            grads[2].mul_(out_scale)
        # The gradient in the projection's own layout, filled view by view.
        grad_qkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
        for view, grad in zip(split_qkv(grad_qkv, num_heads, channel_major), grads):
            view.copy_(grad)
        return (grad_qkv, grad_offset, grad_scale) + (None, ) * 8


def _gather_chunk(query, key, value, key_offset, indices, slots, first, last):
    """q, k, v of blocks [first, last) as (B * blocks, heads, length, d), the key
    offset (one per key pixel, shared by the heads) subtracted from k."""
    heads, dims = query.shape[2:]
    query_index = indices[0][first * slots[0]:last * slots[0]]
    key_index = indices[1][first * slots[1]:last * slots[1]]
    q = query.index_select(1, query_index)
    k = key.index_select(1, key_index)
    if key_offset is not None:
        k.sub_(key_offset.index_select(0, key_index)[:, None])
    v = value.index_select(1, key_index)
    return [x.view(-1, length, heads, dims).transpose(1, 2)
            for x, length in ((q, slots[0]), (k, slots[1]), (v, slots[1]))]


def local_attention(qkv, hw_shape, num_heads, kernel_size=7, stride=1, block=8,
                    key_offset=None, out_scale=None, channel_major=False, dropout_p=0.,
                    chunk_blocks=128):
    """Multi-head attention of each query over its ``k x k`` reflection-padded window.

    Args:
        qkv (Tensor): The packed projection, shape (B, H*W, 3*C), in the token layout
            of the map ``hw_shape``: q, k, v heads (or channel-major, see
            ``channel_major``). Queries are scaled by ``head_dims**-0.5`` inside.
        hw_shape (tuple[int]): (H, W).
        num_heads (int): Number of heads.
        kernel_size (int): Window side k. Default: 7.
        stride (int): Queries are taken every ``stride`` pixels (windows centred on
            them), giving a ceil(H/stride) x ceil(W/stride) output. Default: 1.
        block (int): Side of the query blocks (speed only). Default: 8.
        key_offset (Tensor, optional): Shape (H*W, head_dims), subtracted from the
            keys of every head (position encodings). Default: None.
        out_scale (Tensor, optional): A one-element factor of the output, applied
            to the values of each chunk (no product of the whole output is made or
            kept). Default: None.
        channel_major (bool): Whether ``qkv`` is laid out channel-major
            (``acmix.to_channel_major``). Default: False.
        dropout_p (float): Dropout on the attention weights. Default: 0.
        chunk_blocks (int): Blocks gathered at a time on CPU (memory only).
            Default: 128.

    Returns:
        tuple: output of shape (B, H'*W', heads, head_dims) and (H', W').
    """
    layout = block_layout(*hw_shape, kernel_size, stride, block, qkv.device)
    mask = layout['mask'].to(qkv.dtype)
    if qkv.device.type == 'cpu' and _FLASH_CPU is not None and dropout_p == 0.:
        out = _ChunkedBlockAttention.apply(qkv, key_offset, out_scale,
                                           layout['query_index'], layout['key_index'],
                                           layout['slot_pixel'], mask, layout['num_out'],
                                           num_heads, int(channel_major), chunk_blocks)
        return out, layout['out_shape']
    # Other devices: one fused attention call over all blocks, autograd throughout.
    query, key, value = split_qkv(qkv, num_heads, channel_major)
    batch, _, heads, dims = query.shape
    num_blocks = layout['num_blocks']
    queries, keys = layout['slots']

    def gather(x, index, length, offset=None):
        # (B, N, heads, d) -> (B * blocks, heads, length, d)
        x = x.index_select(1, index)
        if offset is not None:
            x = x - offset.index_select(0, index)[:, None]
        return x.view(batch * num_blocks, length, heads, dims).transpose(1, 2)

    value = gather(value, layout['key_index'], keys)
    out = F.scaled_dot_product_attention(
        gather(query, layout['query_index'], queries),
        gather(key, layout['key_index'], keys, key_offset),
        value if out_scale is None else value * out_scale,
        attn_mask=mask,
        dropout_p=dropout_p)
    out = out.transpose(1, 2).reshape(batch, num_blocks * queries, heads, dims)
    return out.index_select(1, layout['output_index']), layout['out_shape']


def exporting():
    """Whether an export (torch.export, the dynamo ONNX exporter) or a jit trace is
    under way: those take forms of standard operators."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting()


def native_usable(tensor):
    """Whether a native operator (``acmix_mm.ops``) serves a call on ``tensor``: the C++
    kernels for a CPU tensor, the Triton kernels for a CUDA tensor, each where it is
    built (loaded) and switched on, and no export or jit trace under way (those take the
    PyTorch path, which exports to standard operators)."""
    if exporting():
        return False
    if tensor.device.type == 'cuda':
        return ops.triton_enabled()
    return ops.native_enabled() and tensor.device.type == 'cpu'


def adds_conv_natively(qkv, stride, channel_major):
    """Whether :func:`native_local_attention_plus_conv` serves the projection ``qkv``:
    the native CPU operator, float32 or float64 without autocast, stride 1, a view of
    planes in the projection's own order."""
    return (stride == 1 and not channel_major and qkv.device.type == 'cpu'
            and native_usable(qkv) and ops.sliding_window.PLUS_CONV_BUILT
            and qkv.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled('cpu') and not qkv.is_contiguous()
            and qkv.transpose(1, 2).is_contiguous())


def native_local_attention_plus_conv(qkv, hw_shape, num_heads, kernel_size, key_offset,
                                     out_scale, conv_weight):
    """:func:`native_local_attention` at stride 1 plus ACmix's convolution path (its
    grouped conv ``conv_weight`` on the projection's planes), in one native operator
    (``torch.ops.acmix_mm.reflect_window_attention_plus_conv``, where
    :func:`adds_conv_natively`): the sum and its gradient are taken as the convolution
    stores them. Returns (B, H*W, C), a view of NCHW planes."""
    height, width = hw_shape
    check_map_size(height, width, kernel_size)
    dims = qkv.shape[2] // (3 * num_heads)
    out = ops.reflect_window_attention_plus_conv(
        qkv, hw_shape, num_heads, kernel_size, key_offset.to(qkv.dtype),
        out_scale.to(qkv.dtype), conv_weight, dims**-0.5)
    return out.flatten(2).transpose(1, 2)


def native_local_attention(qkv, hw_shape, num_heads, kernel_size=7, stride=1,
                           key_offset=None, out_scale=None, channel_major=False):
    """:func:`local_attention` as a native operator. On CPU one operator
    (``torch.ops.acmix_mm.reflect_window_attention``): the kernel takes q, k, v from the
    projection, subtracts the key offset, scales the values and pads by reflection
    itself, so no padded map is made here or kept for backward. On CUDA the planes are
    made and padded here and the Triton kernels
    (``torch.ops.acmix_mm.triton_sliding_window_attention``) attend over them.

    Arguments and result as :func:`local_attention` (no dropout). On CPU float16 and
    bfloat16 run in float32; on CUDA they run as they are, accumulated in float32. The
    output is a view of the kernel's planes, (B, H'*W', heads, head_dims) in shape.
    """
    height, width = hw_shape
    check_map_size(height, width, kernel_size)
    batch, _, channels = qkv.shape
    dims = channels // (3 * num_heads)
    if qkv.device.type == 'cuda':
        out = _padded_window_attention(qkv, hw_shape, num_heads, kernel_size, stride,
                                       key_offset, out_scale, channel_major)
    else:
        dtype = qkv.dtype if qkv.dtype in (torch.float32, torch.float64) else torch.float32
        if key_offset is None:
            key_offset = qkv.new_zeros(height * width, dims)
        if out_scale is None:
            out_scale = qkv.new_ones(1)
        out = ops.reflect_window_attention(qkv.to(dtype), hw_shape, num_heads, kernel_size,
                                           stride, key_offset.to(dtype),
                                           out_scale.to(dtype), bool(channel_major),
                                           dims**-0.5)
    out_h, out_w = out.shape[2:]
    out = out.view(batch, num_heads, dims, out_h * out_w).permute(0, 3, 1, 2)
    return out.to(qkv.dtype), (out_h, out_w)


def _padded_window_attention(qkv, hw_shape, num_heads, kernel_size, stride, key_offset,
                             out_scale, channel_major):
    """What the CPU operator does inside, in PyTorch around
    :func:`acmix_mm.ops.sliding_window_attention`: planes (B * heads, d, H, W) of q (every
    ``stride`` pixels), of k less its offset and of v times ``out_scale``, k and v padded
    by reflection. All in the projection's dtype (autocast gives float16 q, k, v beside a
    float32 alpha)."""
    batch = qkv.shape[0]
    radius = kernel_size // 2
    query, key, value = split_qkv(qkv, num_heads, channel_major)
    dims = query.shape[-1]
    if key_offset is not None:
        key = key - key_offset.to(qkv.dtype)[:, None]
    if out_scale is not None:
        value = value * out_scale.to(qkv.dtype)

    def planes(x):  # (B, H*W, heads, d) -> (B * heads, d, H, W)
        return x.permute(0, 2, 3, 1).reshape(batch * num_heads, dims, *hw_shape)

    query = planes(query)[:, :, ::stride, ::stride]
    key, value = (F.pad(planes(x), (radius, ) * 4, mode='reflect') for x in (key, value))
    return ops.sliding_window_attention(query, key, value, kernel_size, stride, dims**-0.5)
