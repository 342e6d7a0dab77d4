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
    return _block_layout(height, width, kernel_size, stride, block, device)


@functools.lru_cache(maxsize=64)
def _block_layout(height, width, kernel_size, stride, block, device):
    radius = kernel_size // 2
    if min(height, width) <= radius:
        raise ConfigError(
            f'Sliding-window attention with kernel {kernel_size} pads by reflection, '
            f'which needs feature maps larger than {radius} pixels; got {height}x'
            f'{width}. Use a larger input image.')
    out_h, out_w = -(-height // stride), -(-width // stride)
    blocks_h, blocks_w = -(-out_h // block), -(-out_w // block)
    span = stride * (block - 1) + kernel_size

    # Output slots of all blocks: (blocks_h, blocks_w, block, block) -> query pixel.
    slot_y = (torch.arange(blocks_h)[:, None] * block + torch.arange(block)).view(
        blocks_h, 1, block, 1)
    slot_x = (torch.arange(blocks_w)[:, None] * block + torch.arange(block)).view(
        1, blocks_w, 1, block)
    valid = (slot_y < out_h) & (slot_x < out_w)
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
    del valid  # padding slots are dropped through output_index
    return dict(
        query_index=query_index.flatten().to(device),
        key_index=key_index.flatten().to(device),
        output_index=output_index.flatten().to(device),
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


class _ChunkedBlockAttention(torch.autograd.Function):
    """Block attention over chunks of blocks, gathering each chunk on the fly.

    Only the ungathered q, k, v, the output and the log-sum-exp are kept for backward;
    the 3x gathered keys and values exist one chunk at a time, in forward and again in
    backward, so memory stays near the size of the inputs.
    """

    @staticmethod
    def forward(ctx, query, key, value, query_index, key_index, mask, chunk_blocks):
        # Only tensors and numbers as arguments, so that the function can be traced.
        batch, _, heads, dims = query.shape
        queries = mask.shape[0]
        num_blocks = query_index.numel() // queries
        indices = (query_index, key_index)
        out = query.new_empty(batch, num_blocks * queries, heads, dims)
        logsumexps = []
        for first, last in _chunks(num_blocks, chunk_blocks):
            q, k, v = _gather_chunk(query, key, value, indices, mask.shape, first, last)
            chunk_out, logsumexp = _FLASH_CPU(q, k, v, 0.0, False, attn_mask=mask)
            out[:, first * queries:last * queries] = chunk_out.transpose(1, 2).reshape(
                batch, -1, heads, dims)
            logsumexps.append(logsumexp)
        ctx.chunk_blocks = chunk_blocks
        ctx.save_for_backward(query, key, value, query_index, key_index, mask, out,
                              *logsumexps)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, query_index, key_index, mask, out, *logsumexps = \
            ctx.saved_tensors
        batch, _, heads, dims = query.shape
        queries, keys = mask.shape
        num_blocks = query_index.numel() // queries
        grad_out = grad_out.contiguous()
        grads = [torch.zeros_like(t) for t in (query, key, value)]
        for (first, last), logsumexp in zip(_chunks(num_blocks, ctx.chunk_blocks),
                                            logsumexps):
            q, k, v = _gather_chunk(query, key, value, (query_index, key_index),
                                    mask.shape, first, last)
            rows = slice(first * queries, last * queries)

            def blocks(x):
                return x[:, rows].reshape(-1, queries, heads, dims).transpose(1, 2)

            grad_q, grad_k, grad_v = _FLASH_CPU_BACKWARD(
                blocks(grad_out), q, k, v, blocks(out), logsumexp, 0.0, False,
                attn_mask=mask)
            for grad, chunk_grad, index, length in (
                    (grads[0], grad_q, query_index, queries),
                    (grads[1], grad_k, key_index, keys),
                    (grads[2], grad_v, key_index, keys)):
                grad.index_add_(1, index[first * length:last * length],
                                chunk_grad.transpose(1, 2).reshape(batch, -1, heads, dims))
        return grads[0], grads[1], grads[2], None, None, None, None


def _gather_chunk(query, key, value, indices, slots, first, last):
    """q, k, v of blocks [first, last) as (B * blocks, heads, length, d)."""
    heads, dims = query.shape[2:]
    gathered = []
    for x, index, length in ((query, indices[0], slots[0]), (key, indices[1], slots[1]),
                             (value, indices[1], slots[1])):
        x = x.index_select(1, index[first * length:last * length])
        gathered.append(x.view(-1, length, heads, dims).transpose(1, 2))
    return gathered


def local_attention(query, key, value, hw_shape, kernel_size=7, stride=1, block=8,
                    dropout_p=0., chunk_blocks=128):
    """Multi-head attention of each query over its ``k x k`` reflection-padded window.

    Args:
        query, key, value (Tensor): Shape (B, H*W, heads, head_dims), in the token
            layout of the map ``hw_shape``. Queries are scaled by ``head_dims**-0.5``
            inside.
        hw_shape (tuple[int]): (H, W).
        kernel_size (int): Window side k. Default: 7.
        stride (int): Queries are taken every ``stride`` pixels (windows centred on
            them), giving a ceil(H/stride) x ceil(W/stride) output. Default: 1.
        block (int): Side of the query blocks (speed only). Default: 8.
        dropout_p (float): Dropout on the attention weights. Default: 0.
        chunk_blocks (int): Blocks gathered at a time on CPU (memory only).
            Default: 128.

    Returns:
        tuple: output of shape (B, H'*W', heads, head_dims) and (H', W').
    """
    batch, _, heads, dims = query.shape
    layout = block_layout(*hw_shape, kernel_size, stride, block, query.device)
    if query.device.type == 'cpu' and _FLASH_CPU is not None and dropout_p == 0.:
        # Strided views are gathered as they are: no copies of the inputs are kept.
        out = _ChunkedBlockAttention.apply(query, key, value, layout['query_index'],
                                           layout['key_index'],
                                           layout['mask'].to(query.dtype), chunk_blocks)
    else:
        # Other devices: one fused attention call over all blocks, autograd throughout.
        num_blocks = layout['num_blocks']
        queries, keys = layout['slots']

        def gather(x, index, length):
            # (B, N, heads, d) -> (B * blocks, heads, length, d)
            x = x.index_select(1, index).view(batch * num_blocks, length, heads, dims)
            return x.transpose(1, 2)

        out = F.scaled_dot_product_attention(
            gather(query, layout['query_index'], queries),
            gather(key, layout['key_index'], keys),
            gather(value, layout['key_index'], keys),
            attn_mask=layout['mask'].to(query.dtype),
            dropout_p=dropout_p)
        out = out.transpose(1, 2).reshape(batch, num_blocks * queries, heads, dims)
    return out.index_select(1, layout['output_index']), layout['out_shape']
