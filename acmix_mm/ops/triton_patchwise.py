"""SAN's patch aggregation as Triton kernels, for CUDA tensors.

The same operator as the C++ CPU kernel (``torch.ops.acmix_mm.patch_aggregate``, defined
by :func:`acmix_mm.ops.patch_aggregate_reference`): each output pixel sums the ``k x k``
patch of an already padded value map whose top-left corner it is, value channel c with
weight channel c mod G, the weights being fc2 of the pixel's hidden vector. Registered as
``torch.ops.acmix_mm.triton_patch_aggregate`` (and ``..._backward``), a ``torch.library``
custom op with a fake implementation and an autograd formula.

fc2 is a matrix product over channels, which cuBLAS runs at its rate: the weights
(B, G * k*k, H*W) are made by it for each pass and freed at its end (autograd keeps only
the op's inputs), and the kernels read the patches in place, never unfolded:

* Forward: one program per tile of pixels of one image and weight group; it loads the
  tile's k*k weights once and sums the patches of the group's C / G channels.
* Backward: a weight pass gives the weights' gradient (output gradient times patch,
  summed over the group's channels), from which fc2's gradients and the hidden map's
  are matrix products again; a value pass walks, for each padded value pixel, the output
  pixels whose patch holds it. Each gradient element is written once by one program:
  deterministic, no atomics.

float16 and bfloat16 are loaded and accumulated in float32 (float64 in float64); the
weights' gradient is kept in that accumulation type.

Importing this module imports Triton; ``TRITON_INTERPRET=1``, set before, runs the
kernels on CPU tensors (the tests do that).
"""
import torch
import triton
import triton.language as tl

from .patchwise import aggregate_output_like, grads_like, register_patch_autograd
from .triton_window import _TL_DTYPE, INTERPRETED, _accumulation, _on_device_of

OP = 'acmix_mm::triton_patch_aggregate'
# Sizes not specialised on: one compile per kernel size and dtype.
_SIZES = ['channels', 'groups', 'height', 'width', 'value_h', 'value_w']


@triton.jit
def _pixel_tile(groups, height, width, KERNEL: tl.constexpr, BLOCK_P: tl.constexpr,
                BLOCK_J: tl.constexpr):
    """This program's image, weight group and tile of pixels (flattened rows), with
    their mask, and the patch positions (rows of the k*k patch) with theirs."""
    image = tl.program_id(1) // groups
    group = tl.program_id(1) % groups
    pixel = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    inside = pixel < height * width
    position = tl.arange(0, BLOCK_J)
    used = position < KERNEL * KERNEL
    return image.to(tl.int64), group, pixel, inside, position, used


@triton.jit
def _patches(groups, height, width, value_w, KERNEL: tl.constexpr, BLOCK_P: tl.constexpr,
             BLOCK_J: tl.constexpr):
    """This program's image, weight group and pixels with their mask, the (positions,
    pixels) mask of their patches and the patches' element offsets in a padded value
    plane: each pixel's corner plus each position's shift."""
    image, group, pixel, inside, position, used = _pixel_tile(groups, height, width, KERNEL,
                                                              BLOCK_P, BLOCK_J)
    corner = (pixel // width) * value_w + pixel % width
    patch = ((position // KERNEL) * value_w + position % KERNEL)[:, None] + corner[None, :]
    return image, group, pixel, inside, used[:, None] & inside[None, :], patch


@triton.jit
def _weights_at(w_ptr, image, group, pixel, groups, pixels, BLOCK_J: tl.constexpr,
                KERNEL: tl.constexpr):
    """Pointers to the weights of the patch positions and these pixels, a (positions,
    pixels) tile of the (B, G * k*k, H*W) weights."""
    rows = (image * groups + group) * KERNEL * KERNEL + tl.arange(0, BLOCK_J)
    return w_ptr + rows[:, None] * pixels + pixel[None, :]


@triton.jit(do_not_specialize=_SIZES)
def _forward_kernel(v_ptr, w_ptr, out_ptr, channels, groups, height, width, value_h,
                    value_w, KERNEL: tl.constexpr, BLOCK_P: tl.constexpr,
                    BLOCK_J: tl.constexpr, ACC: tl.constexpr):
    image, group, pixel, inside, mask, patch = _patches(groups, height, width, value_w,
                                                        KERNEL, BLOCK_P, BLOCK_J)
    pixels = height * width
    weight = tl.load(_weights_at(w_ptr, image, group, pixel, groups, pixels, BLOCK_J,
                                 KERNEL), mask=mask, other=0.).to(ACC)
    for member in range(0, channels // groups):
        channel = member * groups + group
        values = tl.load(v_ptr + (image * channels + channel) * value_h * value_w + patch,
                         mask=mask, other=0.).to(ACC)
        out = tl.sum(weight * values, axis=0)
        tl.store(out_ptr + (image * channels + channel) * pixels + pixel,
                 out.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit(do_not_specialize=_SIZES)
def _weight_grad_kernel(v_ptr, dout_ptr, dw_ptr, channels, groups, height, width, value_h,
                        value_w, KERNEL: tl.constexpr, BLOCK_P: tl.constexpr,
                        BLOCK_J: tl.constexpr, ACC: tl.constexpr):
    """The weights' gradient: output gradient times patch, over the group's channels."""
    image, group, pixel, inside, mask, patch = _patches(groups, height, width, value_w,
                                                        KERNEL, BLOCK_P, BLOCK_J)
    pixels = height * width
    grad = tl.zeros([BLOCK_J, BLOCK_P], ACC)
    for member in range(0, channels // groups):
        channel = member * groups + group
        values = tl.load(v_ptr + (image * channels + channel) * value_h * value_w + patch,
                         mask=mask, other=0.).to(ACC)
        dout = tl.load(dout_ptr + (image * channels + channel) * pixels + pixel, mask=inside,
                       other=0.).to(ACC)
        grad += values * dout[None, :]
    tl.store(_weights_at(dw_ptr, image, group, pixel, groups, pixels, BLOCK_J, KERNEL), grad,
             mask=mask)


@triton.jit(do_not_specialize=_SIZES)
def _value_grad_kernel(w_ptr, dout_ptr, dv_ptr, channels, groups, height, width, value_h,
                       value_w, KERNEL: tl.constexpr, BLOCK_P: tl.constexpr,
                       BLOCK_J: tl.constexpr, ACC: tl.constexpr):
    """The padded values' gradient: each value pixel gathers from the output pixels whose
    patch holds it (the one at patch position j, if inside the map)."""
    image, group, key, inside, position, used = _pixel_tile(groups, value_h, value_w, KERNEL,
                                                            BLOCK_P, BLOCK_J)
    top = (key // value_w)[None, :] - (position // KERNEL)[:, None]
    left = (key % value_w)[None, :] - (position % KERNEL)[:, None]
    seen = (used[:, None] & inside[None, :] & (top >= 0) & (top < height) & (left >= 0) &
            (left < width))
    pixel = tl.where(seen, top * width + left, 0)
    pixels = height * width
    rows = (image * groups + group) * KERNEL * KERNEL + position
    weight = tl.load(w_ptr + rows[:, None] * pixels + pixel, mask=seen, other=0.).to(ACC)
    for member in range(0, channels // groups):
        channel = member * groups + group
        dout = tl.load(dout_ptr + (image * channels + channel) * pixels + pixel, mask=seen,
                       other=0.).to(ACC)
        grad = tl.sum(weight * dout, axis=0)
        tl.store(dv_ptr + (image * channels + channel) * value_h * value_w + key,
                 grad.to(dv_ptr.dtype.element_ty), mask=inside)


def _check_inputs(value, hidden, weight, bias, kernel_size):
    torch._check(value.device.type == 'cuda' or INTERPRETED,
                 lambda: 'the Triton patch aggregation takes CUDA tensors (CPU tensors only '
                 'under TRITON_INTERPRET=1); got ' + str(value.device))
    torch._check(value.dtype == hidden.dtype == weight.dtype == bias.dtype,
                 lambda: 'value, hidden, weight and bias differ in dtype')
    torch._check(weight.dim() == 2 and weight.shape[1] == hidden.shape[1] and
                 weight.shape[0] % kernel_size**2 == 0 and bias.shape == weight.shape[:1],
                 lambda: f'fc2 of {tuple(weight.shape)} (bias {tuple(bias.shape)}) does not '
                 f'map {hidden.shape[1]} hidden channels to groups of {kernel_size}x'
                 f'{kernel_size} weights')
    groups = weight.shape[0] // kernel_size**2
    torch._check(value.shape[1] % groups == 0,
                 lambda: f'{value.shape[1]} value channels do not split into {groups} '
                 'weight groups')


def _weights(hidden, weight, bias):
    """fc2 of every pixel's hidden vector: (B, G * k*k, H*W)."""
    return torch.baddbmm(bias[:, None], weight.expand(hidden.shape[0], -1, -1),
                         hidden.flatten(2))


def _launch(dtype, kernel_size):
    """Block sizes: the k*k positions padded to a power of two, pixels to about 4096
    elements a tile."""
    block_j = triton.next_power_of_2(kernel_size**2)
    return dict(BLOCK_J=block_j, BLOCK_P=max(16, 4096 // block_j), KERNEL=kernel_size,
                ACC=_TL_DTYPE[_accumulation(dtype)], num_warps=4)


@torch.library.custom_op(OP, mutates_args=())
def triton_patch_aggregate(value: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor,
                           bias: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Forward. Args and returns as :func:`acmix_mm.ops.patch_aggregate_reference`."""
    _check_inputs(value, hidden, weight, bias, kernel_size)
    out = aggregate_output_like(value, hidden, kernel_size)
    value = value.contiguous()
    batch, channels, value_h, value_w = value.shape
    height, width = hidden.shape[2:]
    groups = weight.shape[0] // kernel_size**2
    launch = _launch(value.dtype, kernel_size)
    with _on_device_of(value):
        weights = _weights(hidden, weight, bias)
        grid = (triton.cdiv(height * width, launch['BLOCK_P']), batch * groups)
        _forward_kernel[grid](value, weights, out, channels, groups, height, width, value_h,
                              value_w, **launch)
    return out


@torch.library.custom_op(OP + '_backward', mutates_args=())
def triton_patch_aggregate_backward(
        grad_out: torch.Tensor, value: torch.Tensor, hidden: torch.Tensor,
        weight: torch.Tensor, bias: torch.Tensor,
        kernel_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of value, hidden, weight and bias, the weights made again by fc2."""
    _check_inputs(value, hidden, weight, bias, kernel_size)
    grad_out, value = grad_out.to(value.dtype).contiguous(), value.contiguous()
    batch, channels, value_h, value_w = value.shape
    height, width = hidden.shape[2:]
    groups = weight.shape[0] // kernel_size**2
    acc = _accumulation(value.dtype)
    launch = _launch(value.dtype, kernel_size)
    sizes = (channels, groups, height, width, value_h, value_w)
    grad_value = torch.empty_like(value)
    grad_weights = value.new_empty((batch, weight.shape[0], height * width), dtype=acc)
    with _on_device_of(value):
        weights = _weights(hidden, weight, bias)
        grid = (triton.cdiv(height * width, launch['BLOCK_P']), batch * groups)
        _weight_grad_kernel[grid](value, grad_out, grad_weights, *sizes, **launch)
        grid = (triton.cdiv(value_h * value_w, launch['BLOCK_P']), batch * groups)
        _value_grad_kernel[grid](weights, grad_out, grad_value, *sizes, **launch)
        del weights
        hidden_acc = hidden.flatten(2).to(acc)
        grad_hidden = torch.matmul(weight.to(acc).t(), grad_weights)
        grad_weight = torch.einsum('bkp,bhp->kh', grad_weights, hidden_acc)
        grad_bias = grad_weights.sum((0, 2))
    return (grad_value, grad_hidden.view(hidden.shape).to(hidden.dtype),
            grad_weight.to(weight.dtype), grad_bias.to(bias.dtype))


@triton_patch_aggregate.register_fake
def _forward_fake(value, hidden, weight, bias, kernel_size):
    return aggregate_output_like(value, hidden, kernel_size)


@triton_patch_aggregate_backward.register_fake
def _backward_fake(grad_out, value, hidden, weight, bias, kernel_size):
    return grads_like(value, hidden, weight, bias)


register_patch_autograd(OP)
