"""Sliding-window attention on padded maps as Triton kernels, for CUDA tensors.

The same operator as the C++ CPU kernels (``torch.ops.acmix_mm.sliding_window_attention``,
defined by :func:`acmix_mm.ops.sliding_window_attention_reference`): planes ``(N, d, H,
W)``, each query attending to the ``k x k`` window of already padded keys and values whose
top-left corner is ``(y * stride, x * stride)``. Registered as
``torch.ops.acmix_mm.triton_sliding_window_attention`` (and ``..._backward``), a
``torch.library`` custom op with a fake implementation and an autograd formula, so that
torch.compile traces it without graph breaks.

* Forward: one program per tile of queries of one plane (rows of up to 32 pixels, so
  that loads coalesce); an online softmax over the k*k offsets keeps a running maximum,
  sum and weighted value sum, and stores the output and the log-sum-exp of each query.
* Backward, two passes without atomics: a query pass recomputes the weights from the
  log-sum-exp and gives dq (and ``delta = dout . out`` per query); a key pass walks, for
  each key pixel, the queries whose window holds it and gives dk and dv. Every gradient
  element is written once by one program: deterministic, no float32 scratch for half
  inputs, and none of the k*k-fold contention that atomics would meet on each key (49
  adds per element at k = 7). The price is computing q . k twice, cheap beside the
  memory traffic.

float16 and bfloat16 are loaded and accumulated in float32 (float64 in float64, which
the tests use under the Triton interpreter); the log-sum-exp is kept in that
accumulation type.

Importing this module imports Triton. ``TRITON_INTERPRET=1``, set before Triton is
imported, runs the kernels on CPU tensors (the tests do that); otherwise the op refuses
CPU tensors, which the C++ op serves.
"""
import contextlib
import os

import torch
import triton
import triton.language as tl

from .sliding_window import register_window_autograd, window_grads_like, window_outputs_like

OP = 'acmix_mm::triton_sliding_window_attention'
INTERPRETED = os.environ.get('TRITON_INTERPRET') == '1'
# Map sizes are not specialised on (by default Triton compiles a variant for each
# combination of sizes divisible by 16): one compile per kernel size, stride and dtype,
# not one per feature-map shape of a backbone.
_SIZES = ['dims', 'out_h', 'out_w', 'key_h', 'key_w']


@triton.jit
def _tile(height, width, dims, BLOCK: tl.constexpr, BLOCK_W: tl.constexpr,
          BLOCK_D: tl.constexpr):
    """This program's tile of a (planes, dims, height, width) tensor: BLOCK // BLOCK_W
    rows of BLOCK_W pixels (runs of BLOCK_W contiguous pixels, so that loads coalesce),
    all channels. Returns the plane (int64: planes * dims * height * width may pass
    2**31), the rows and columns of the pixels, their masks and the tile's masks and
    element offsets."""
    plane = tl.program_id(1).to(tl.int64)
    tiles_w = tl.cdiv(width, BLOCK_W)
    offs = tl.arange(0, BLOCK)
    y = (tl.program_id(0) // tiles_w) * (BLOCK // BLOCK_W) + offs // BLOCK_W
    x = (tl.program_id(0) % tiles_w) * BLOCK_W + offs % BLOCK_W
    inside = (y < height) & (x < width)
    offs_d = tl.arange(0, BLOCK_D)
    mask = inside[:, None] & (offs_d < dims)[None, :]
    count = height * width
    at = plane * dims * count + offs_d[None, :] * count + (y * width + x)[:, None]
    return plane, y, x, inside, mask, at


@triton.jit
def _window_corners(plane, y, x, dims, key_w, keys, STRIDE: tl.constexpr,
                    BLOCK_D: tl.constexpr):
    """Element offsets of the top-left key of each query's window, a (queries, BLOCK_D)
    tile of the key planes."""
    corner = y * STRIDE * key_w + x * STRIDE
    return plane * dims * keys + tl.arange(0, BLOCK_D)[None, :] * keys + corner[:, None]


@triton.jit(do_not_specialize=_SIZES)
def _forward_kernel(q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, dims, out_h, out_w, key_h, key_w,
                    scale_ptr, KERNEL: tl.constexpr, STRIDE: tl.constexpr,
                    BLOCK_Q: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr,
                    ACC: tl.constexpr):
    scale = tl.load(scale_ptr)
    plane, y, x, inside, mask, q_at = _tile(out_h, out_w, dims, BLOCK_Q, BLOCK_W, BLOCK_D)
    q = tl.load(q_ptr + q_at, mask=mask, other=0.).to(ACC) * scale
    k_at = _window_corners(plane, y, x, dims, key_w, key_h * key_w, STRIDE, BLOCK_D)
    running_max = tl.full([BLOCK_Q], float('-inf'), ACC)
    running_sum = tl.zeros([BLOCK_Q], ACC)
    acc = tl.zeros([BLOCK_Q, BLOCK_D], ACC)
    for offset in range(0, KERNEL * KERNEL):
        shift = (offset // KERNEL) * key_w + offset % KERNEL
        k = tl.load(k_ptr + k_at + shift, mask=mask, other=0.).to(ACC)
        v = tl.load(v_ptr + k_at + shift, mask=mask, other=0.).to(ACC)
        logit = tl.sum(q * k, axis=1)
        new_max = tl.maximum(running_max, logit)
        decay = tl.exp(running_max - new_max)
        weight = tl.exp(logit - new_max)
        running_sum = running_sum * decay + weight
        acc = acc * decay[:, None] + weight[:, None] * v
        running_max = new_max
    out = acc / running_sum[:, None]
    tl.store(out_ptr + q_at, out.to(out_ptr.dtype.element_ty), mask=mask)
    lse = running_max + tl.log(running_sum)
    tl.store(lse_ptr + plane * out_h * out_w + y * out_w + x, lse, mask=inside)


@triton.jit(do_not_specialize=_SIZES)
def _backward_query_kernel(q_ptr, k_ptr, v_ptr, out_ptr, dout_ptr, lse_ptr, delta_ptr,
                           dq_ptr, dims, out_h, out_w, key_h, key_w, scale_ptr,
                           KERNEL: tl.constexpr, STRIDE: tl.constexpr,
                           BLOCK_Q: tl.constexpr, BLOCK_W: tl.constexpr,
                           BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    """dq, and delta = dout . out of each query for the key pass."""
    scale = tl.load(scale_ptr)
    plane, y, x, inside, mask, q_at = _tile(out_h, out_w, dims, BLOCK_Q, BLOCK_W, BLOCK_D)
    lse_at = plane * out_h * out_w + y * out_w + x
    q = tl.load(q_ptr + q_at, mask=mask, other=0.).to(ACC) * scale
    dout = tl.load(dout_ptr + q_at, mask=mask, other=0.).to(ACC)
    delta = tl.sum(dout * tl.load(out_ptr + q_at, mask=mask, other=0.).to(ACC), axis=1)
    tl.store(delta_ptr + lse_at, delta, mask=inside)
    lse = tl.load(lse_ptr + lse_at, mask=inside, other=0.).to(ACC)
    k_at = _window_corners(plane, y, x, dims, key_w, key_h * key_w, STRIDE, BLOCK_D)
    dq = tl.zeros([BLOCK_Q, BLOCK_D], ACC)
    for offset in range(0, KERNEL * KERNEL):
        shift = (offset // KERNEL) * key_w + offset % KERNEL
        k = tl.load(k_ptr + k_at + shift, mask=mask, other=0.).to(ACC)
        v = tl.load(v_ptr + k_at + shift, mask=mask, other=0.).to(ACC)
        weight = tl.exp(tl.sum(q * k, axis=1) - lse)
        dlogit = weight * (tl.sum(dout * v, axis=1) - delta)
        dq += dlogit[:, None] * k
    tl.store(dq_ptr + q_at, (dq * scale).to(dq_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=_SIZES)
def _backward_key_kernel(q_ptr, k_ptr, v_ptr, dout_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
                         dims, out_h, out_w, key_h, key_w, scale_ptr,
                         KERNEL: tl.constexpr, STRIDE: tl.constexpr, BLOCK_K: tl.constexpr,
                         BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr, ACC: tl.constexpr):
    """dk and dv of a block of key pixels, from the queries whose windows hold them."""
    scale = tl.load(scale_ptr)
    queries = out_h * out_w
    plane, key_y, key_x, inside, mask, k_at = _tile(key_h, key_w, dims, BLOCK_K, BLOCK_W,
                                                    BLOCK_D)
    k = tl.load(k_ptr + k_at, mask=mask, other=0.).to(ACC)
    v = tl.load(v_ptr + k_at, mask=mask, other=0.).to(ACC)
    q_planes = plane * dims * queries + tl.arange(0, BLOCK_D)[None, :] * queries
    dim_mask = (tl.arange(0, BLOCK_D) < dims)[None, :]
    dk = tl.zeros([BLOCK_K, BLOCK_D], ACC)
    dv = tl.zeros([BLOCK_K, BLOCK_D], ACC)
    for offset in range(0, KERNEL * KERNEL):
        # The query whose window has this key at (offset // k, offset % k), if any:
        # its corner must lie on the stride grid and inside the output.
        top = key_y - offset // KERNEL
        left = key_x - offset % KERNEL
        seen = (inside & (top >= 0) & (left >= 0) & (top % STRIDE == 0) &
                (left % STRIDE == 0) & (top < out_h * STRIDE) & (left < out_w * STRIDE))
        query = tl.where(seen, (top // STRIDE) * out_w + left // STRIDE, 0)
        q_at = q_planes + query[:, None]
        q_mask = seen[:, None] & dim_mask
        q = tl.load(q_ptr + q_at, mask=q_mask, other=0.).to(ACC) * scale
        dout = tl.load(dout_ptr + q_at, mask=q_mask, other=0.).to(ACC)
        lse = tl.load(lse_ptr + plane * queries + query, mask=seen, other=0.).to(ACC)
        delta = tl.load(delta_ptr + plane * queries + query, mask=seen, other=0.).to(ACC)
        weight = tl.where(seen, tl.exp(tl.sum(q * k, axis=1) - lse), 0.)
        dlogit = weight * (tl.sum(dout * v, axis=1) - delta)
        dv += weight[:, None] * dout
        dk += dlogit[:, None] * q  # q already carries the scale
    tl.store(dk_ptr + k_at, dk.to(dk_ptr.dtype.element_ty), mask=mask)
    tl.store(dv_ptr + k_at, dv.to(dv_ptr.dtype.element_ty), mask=mask)


def _accumulation(dtype):
    """The kernels' accumulation type for an input dtype (and that of the log-sum-exp)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _launch(height, width, dims):
    """The grid and block sizes of tiles over (planes, dims, height, width): about 2048
    elements per (pixels, channels) tile and 16 per thread, rows of up to 32 pixels.
    Compiled for sm_90, the kernels then hold 170 to 250 registers a thread and spill
    none at head widths 16 to 128 (4096 elements a tile spilled at 64 and above)."""
    block_d = triton.next_power_of_2(dims)
    block = max(16, min(128, 2048 // block_d))
    block_w = min(block, 32, triton.next_power_of_2(width))
    tiles = triton.cdiv(height, block // block_w) * triton.cdiv(width, block_w)
    warps = max(2, min(8, block * block_d // 512))
    return tiles, dict(BLOCK_W=block_w, BLOCK_D=block_d, num_warps=warps), block


def _scale_tensor(scale, like):
    """The logits' factor as a one-element tensor of the accumulation type: a Python
    float passed to a compiled Triton kernel becomes float32, which float64 cannot
    afford."""
    return torch.full((1, ), scale, dtype=like.dtype, device=like.device)


def _on_device_of(tensor):
    """Kernels launch on the current CUDA device: make it the tensor's."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _check_inputs(query, key, value):
    torch._check(query.device.type == 'cuda' or INTERPRETED,
                 lambda: 'the Triton sliding-window attention takes CUDA tensors (CPU '
                 'tensors only under TRITON_INTERPRET=1); got ' + str(query.device))
    torch._check(query.dtype == key.dtype == value.dtype,
                 lambda: 'query, key and value differ in dtype')


@torch.library.custom_op(OP, mutates_args=())
def triton_sliding_window_attention(query: torch.Tensor, key: torch.Tensor,
                                    value: torch.Tensor, kernel_size: int, stride: int,
                                    scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward: the output (N, d, H', W') and the log-sum-exp (N, H', W') of each query.

    Args as :func:`acmix_mm.ops.sliding_window_attention_reference`.
    """
    _check_inputs(query, key, value)
    out, lse = window_outputs_like(query, key, value, kernel_size, stride,
                                   _accumulation(query.dtype))
    query, key, value = (x.contiguous() for x in (query, key, value))
    planes, dims, out_h, out_w = query.shape
    tiles, launch, block = _launch(out_h, out_w, dims)
    with _on_device_of(query):
        _forward_kernel[(tiles, planes)](
            query, key, value, out, lse, dims, out_h, out_w, *key.shape[2:],
            _scale_tensor(scale, lse), KERNEL=kernel_size, STRIDE=stride, BLOCK_Q=block,
            ACC=_TL_DTYPE[lse.dtype], **launch)
    return out, lse


@torch.library.custom_op(OP + '_backward', mutates_args=())
def triton_sliding_window_attention_backward(
        grad_out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
        out: torch.Tensor, lse: torch.Tensor, kernel_size: int, stride: int,
        scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of query, key and value, the weights recomputed from ``lse``."""
    _check_inputs(query, key, value)
    grad_out, query, key, value, out, lse = (
        x.contiguous() for x in (grad_out.to(query.dtype), query, key, value, out, lse))
    planes, dims, out_h, out_w = query.shape
    key_h, key_w = key.shape[2:]
    grads = window_grads_like(query, key, value)
    delta = torch.empty_like(lse)
    scale = _scale_tensor(scale, lse)
    acc = _TL_DTYPE[lse.dtype]
    with _on_device_of(query):
        tiles, launch, block = _launch(out_h, out_w, dims)
        _backward_query_kernel[(tiles, planes)](
            query, key, value, out, grad_out, lse, delta, grads[0], dims, out_h, out_w,
            key_h, key_w, scale, KERNEL=kernel_size, STRIDE=stride, BLOCK_Q=block, ACC=acc,
            **launch)
        tiles, launch, block = _launch(key_h, key_w, dims)
        _backward_key_kernel[(tiles, planes)](
            query, key, value, grad_out, lse, delta, grads[1], grads[2], dims, out_h, out_w,
            key_h, key_w, scale, KERNEL=kernel_size, STRIDE=stride, BLOCK_K=block, ACC=acc,
            **launch)
    return tuple(grads)


_TL_DTYPE = {torch.float32: tl.float32, torch.float64: tl.float64}


@triton_sliding_window_attention.register_fake
def _forward_fake(query, key, value, kernel_size, stride, scale):
    return window_outputs_like(query, key, value, kernel_size, stride,
                               _accumulation(query.dtype))


@triton_sliding_window_attention_backward.register_fake
def _backward_fake(grad_out, query, key, value, out, lse, kernel_size, stride, scale):
    return window_grads_like(query, key, value)


register_window_autograd(OP, torch.ops.acmix_mm.triton_sliding_window_attention_backward)
