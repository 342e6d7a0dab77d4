"""Window attention (Swin) that keeps the shared projection, not its windows, for backward.

Attention inside windows needs q, k and v cut into windows: a copy of the whole 3C-wide
projection, which autograd would keep for the backward pass. In ACmix the convolution
path keeps that projection already, so :func:`window_attention` keeps only the
projection and the attention weights, and cuts the windows again in the backward pass
(a copy, cheap beside the matmuls): 3C fewer floats per pixel kept in every block.
"""
import torch


def partition_windows(qkv, grid, window, num_heads):
    """Channel-major projection (B, H*W, d * 3 * heads) -> (3, B * windows, heads, N, d)."""
    batch = qkv.shape[0]
    rows, cols = grid
    head_dims = qkv.shape[-1] // (3 * num_heads)
    windows = qkv.view(batch, rows, window, cols, window, head_dims, 3, num_heads)
    return windows.permute(6, 0, 1, 3, 7, 2, 4, 5).reshape(
        3, batch * rows * cols, num_heads, window * window, head_dims)


def merge_windows(windows, batch, grid, window):
    """Inverse of :func:`partition_windows`: (3, B * windows, heads, N, d) -> (B, H*W,
    d * 3 * heads), channel-major."""
    rows, cols = grid
    num_heads, head_dims = windows.shape[2], windows.shape[-1]
    windows = windows.view(3, batch, rows, cols, num_heads, window, window, head_dims)
    return windows.permute(1, 2, 5, 3, 6, 7, 0, 4).reshape(
        batch, rows * window * cols * window, -1)


class _WindowAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(d) + bias) v per window; saves qkv and the weights only."""

    @staticmethod
    def forward(ctx, qkv, bias, rows, cols, window, num_heads):
        query, key, value = partition_windows(qkv, (rows, cols), window, num_heads)
        scale = query.shape[-1]**-0.5
        logits = torch.matmul(query * scale, key.transpose(-2, -1))
        # bias: (1 or windows per image, heads, N, N), the same for every image.
        tokens = window * window
        logits = logits.view(-1, bias.shape[0], num_heads, tokens, tokens) + bias
        attn = logits.softmax(dim=-1).view(-1, num_heads, tokens, tokens)
        ctx.geometry = (qkv.shape[0], rows, cols, window, num_heads, bias.shape[0])
        ctx.save_for_backward(qkv, attn)
        return torch.matmul(attn, value)

    @staticmethod
    def backward(ctx, grad_out):
        qkv, attn = ctx.saved_tensors
        batch, rows, cols, window, num_heads, bias_windows = ctx.geometry
        query, key, value = partition_windows(qkv, (rows, cols), window, num_heads)
        scale = query.shape[-1]**-0.5
        grads = grad_out.new_empty((3, ) + query.shape)
        torch.matmul(attn.transpose(-2, -1), grad_out, out=grads[2])
        grad_attn = torch.matmul(grad_out, value.transpose(-2, -1))
        grad_logits = torch._softmax_backward_data(grad_attn, attn, -1, attn.dtype)
        torch.matmul(grad_logits, key, out=grads[0]).mul_(scale)
        torch.matmul(grad_logits.transpose(-2, -1), query, out=grads[1]).mul_(scale)
        grad_bias = None
        if ctx.needs_input_grad[1]:
            tokens = window * window
            grad_bias = grad_logits.view(-1, bias_windows, num_heads, tokens,
                                         tokens).sum(0)
        grad_qkv = merge_windows(grads, batch, (rows, cols), window)
        return grad_qkv, grad_bias, None, None, None, None


def window_attention(qkv, bias, grid, window, num_heads):
    """Multi-head attention inside each window of a channel-major projection.

    Args:
        qkv (Tensor): Shape (B, H*W, d * 3 * heads), the shared projection of a map of
            ``grid`` windows in the channel-major order (d, q/k/v, heads).
        bias (Tensor): Added to the logits, shape (1 or windows per image, heads, N, N)
            with N = window**2 (relative position bias, plus the shift mask).
        grid (tuple[int]): Windows per column and per row.
        window (int): Window side.
        num_heads (int): Heads.

    Returns:
        Tensor: Shape (B * windows, heads, N, d).
    """
    return _WindowAttention.apply(qkv, bias, grid[0], grid[1], window, num_heads)
