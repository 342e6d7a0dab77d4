"""SAN's patchwise attention in plain PyTorch, without keeping k*k-fold copies.

For every pixel i, patchwise attention (Zhao et al., CVPR 2020) computes weights from
the query and the whole ``k x k`` patch of keys around it,

    w_i = fc2(relu(norm_mid(fc1(relu(norm_in([q_i, k_patch(i)]))))))   G x k*k weights,

and sums the values of the patch, ``out_i[c] = sum_j w_i[c mod G, j] v_j[c]``, on maps
padded by reflection. The reference implementation needs CuPy kernels. Unfolding the
patches in plain PyTorch instead would keep ``k*k`` copies of k (the input of norm_in)
and of v for the backward pass: 49x at k=7, gigabytes at detection resolutions.

Here both steps run over bands of rows, each under activation checkpointing, so autograd
keeps only q, k, v, the G-channel hidden map and the output; a band's patches are
unfolded again in the backward pass. ``norm_in`` normalises every patch channel (key
channel c at patch position j) with statistics over all pixels; those are sums over a
shifted window of the padded key map, read from its integral image without unfolding.

Where the native operators are built, both steps run as C++ kernels on CPU tensors
instead (``acmix_mm.ops.patch_hidden`` with batch statistics, and
``acmix_mm.ops.patch_aggregate`` with fc2), which read the patches in place and keep no
weights either. On CUDA the aggregation runs as Triton kernels
(``torch.ops.acmix_mm.triton_patch_aggregate``). The band-by-band path stays for
whatever those do not serve: exports, running statistics, ``ACMIX_MM_NATIVE_OPS=0``,
and the weights' hidden map on CUDA.
"""
import functools

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .. import ops
from ..errors import ConfigError
from .sliding_window import exporting, native_usable
from .sync_batchnorm import AllReduceSum, CPUSyncBatchNorm, process_group_size

# Elements of a band's unfolded patches (k*k per channel and pixel); bounds the memory
# one band takes, and so the peak of the whole step.
BAND_ELEMENTS = 1 << 22


def reflection_pad(x, kernel_size):
    """Pad a map by ``kernel_size // 2`` on each side by reflection (as the reference)."""
    radius = kernel_size // 2
    height, width = x.shape[-2:]
    if min(height, width) <= radius:
        raise ConfigError(
            f'Patchwise attention with kernel {kernel_size} pads by reflection, which '
            f'needs feature maps larger than {radius} pixels; got {height}x{width}. Use '
            f'a larger input image.')
    return F.pad(x, (radius, ) * 4, mode='reflect')


def native_serves(tensor):
    """Whether the native patchwise operators (C++, CPU only) serve a call on ``tensor``:
    a CPU tensor where the native operators serve (built, switched on, no export or
    trace under way)."""
    return tensor.device.type == 'cpu' and native_usable(tensor)


def triton_serves(tensor):
    """Whether the Triton patch aggregation serves a call on ``tensor``: a CUDA tensor
    where the Triton kernels are loaded and switched on, no export or trace under way."""
    return tensor.device.type == 'cuda' and native_usable(tensor)


def native_dtype(tensor):
    """The dtype the native operators run a tensor's computation in: float16 and
    bfloat16 (autocast) in float32, as the sliding-window operator."""
    return tensor.dtype if tensor.dtype in (torch.float32, torch.float64) else torch.float32


def row_bands(height, width, elements_per_pixel):
    """Split ``height`` rows into bands of at most ``BAND_ELEMENTS`` unfolded elements;
    one band in exports (the bands bound the memory autograd keeps, and each band's
    k*k slices would be nodes of the graph)."""
    if exporting():
        return [(0, height)]
    rows = max(1, BAND_ELEMENTS // max(1, elements_per_pixel * width))
    return [(top, min(top + rows, height)) for top in range(0, height, rows)]


def run_band(function, *tensors):
    """``function(*tensors)``, checkpointed when a backward pass will need it."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return checkpoint(function, *tensors, use_reentrant=False)
    return function(*tensors)


def unfold_band(padded, top, bottom, kernel_size):
    """Patches of output rows ``top:bottom``: (B, C * k*k, rows * W), channel-major."""
    if exporting():
        # F.unfold exports as a Gather through an index map, which took more than half
        # of SAN-ACmix-19's time in ONNX Runtime: the k*k shifted slices, stacked, are
        # the same patches.
        rows, width = bottom - top, padded.shape[-1] - kernel_size + 1
        patches = torch.stack([
            padded[:, :, top + i:top + i + rows, j:j + width]
            for i in range(kernel_size) for j in range(kernel_size)
        ], dim=2)
        return patches.flatten(1, 2).flatten(2)
    return F.unfold(padded[:, :, top:bottom + kernel_size - 1], kernel_size)


def patch_statistics(query, key_padded, kernel_size, norm):
    """Batch mean and (biased) variance of every channel of the ``[q, k_patch]`` patches.

    Args:
        query (Tensor): The query map, (B, r, H, W).
        key_padded (Tensor): The reflection-padded key map, (B, r, H + k - 1, W + k - 1).
        kernel_size (int): Patch side k.
        norm (nn.Module): The norm whose statistics these are: a ``SyncBatchNorm``
            under torch.distributed sums over all processes, as it would.

    Returns:
        tuple: mean and variance of the r * (k*k + 1) patch channels (q first, then k in
        the channel-major order of :func:`unfold_band`), and the number of pixels.
    """
    batch, channels, height, width = query.shape
    synced = isinstance(norm, (nn.SyncBatchNorm, CPUSyncBatchNorm)) and \
        process_group_size() > 1
    # Sums of x and x^2 per channel, centred on a constant (the plain channel mean,
    # the same on every process) so that E[x^2] - E[x]^2 does not cancel.
    centres = torch.stack([query.detach().mean((0, 2, 3)),
                           key_padded.detach().mean((0, 2, 3))])
    if synced:
        dist.all_reduce(centres)
        centres /= dist.get_world_size()
    if native_serves(query):
        dtype = native_dtype(query)
        sums = ops.patch_moments(*(t.to(dtype) for t in (query, key_padded, *centres)),
                                 kernel_size)
    else:
        sums = _patch_sums(query, key_padded, centres, kernel_size)
    pixels = batch * height * width
    if synced:
        count = torch.full((2, 1), float(pixels), dtype=sums.dtype, device=sums.device)
        totals = AllReduceSum.apply(torch.cat([sums, count], dim=1))
        sums, pixels = totals[:, :-1], float(totals[0, -1].detach())  # every process's
    moments = sums / pixels
    centre = torch.cat([centres[0], centres[1].repeat_interleave(kernel_size**2)])
    var = (moments[1] - moments[0].square()).clamp(min=0)
    return (moments[0] + centre).to(query.dtype), var.to(query.dtype), pixels


def _patch_sums(query, key_padded, centres, kernel_size):
    """Sums of x - centre and (x - centre)^2 of every patch channel, (2, r * (k*k + 1))
    in float64: the key windows' sums read from integral images."""
    height, width = query.shape[-2:]
    q_centred = query - centres[0].view(-1, 1, 1)
    q_sums = torch.stack([q_centred.sum((0, 2, 3)), q_centred.square().sum((0, 2, 3))])
    k_centred = key_padded - centres[1].view(-1, 1, 1)
    maps = torch.stack([k_centred.sum(0), k_centred.square().sum(0)]).double()
    integral = F.pad(maps.cumsum(-1).cumsum(-2), (1, 0, 1, 0))  # (2, r, Hp + 1, Wp + 1)
    offsets = torch.arange(kernel_size, device=query.device)
    top, left = offsets.repeat_interleave(kernel_size), offsets.repeat(kernel_size)
    bottom, right = top + height, left + width
    k_sums = (integral[:, :, bottom, right] - integral[:, :, top, right] -
              integral[:, :, bottom, left] + integral[:, :, top, left])  # (2, r, k*k)
    return torch.cat([q_sums.double(), k_sums.flatten(1)], dim=1)


def _hidden_band(query, key_padded, scale, shift, fc1_weight, top, bottom,
                 kernel_size):
    width = query.shape[-1]
    patches = torch.cat([query[:, :, top:bottom].flatten(2),
                         unfold_band(key_padded, top, bottom, kernel_size)], dim=1)
    patches = torch.relu(torch.addcmul(shift[:, None], patches, scale[:, None]))
    hidden = torch.matmul(fc1_weight, patches)  # (B, G, rows * W)
    return hidden.unflatten(2, (bottom - top, width))


def _hidden_band_eval(query, key_padded, fc1_weight, norm, top, bottom, kernel_size):
    width = query.shape[-1]
    patches = torch.cat([query[:, :, top:bottom].flatten(2),
                         unfold_band(key_padded, top, bottom, kernel_size)], dim=1)
    # (B, channels, 1, n): a 2-d norm (BN, SyncBN) takes it as SAN's own code gives it.
    patches = torch.relu(norm(patches.unsqueeze(2)).squeeze(2))
    hidden = torch.matmul(fc1_weight, patches)
    return hidden.unflatten(2, (bottom - top, width))


def patch_hidden(query, key, norm, fc1_weight, kernel_size):
    """``fc1(relu(norm([q, k_patch])))`` over the map: (B, G, H, W).

    Args:
        query (Tensor): (B, r, H, W).
        key (Tensor): (B, r, H, W).
        norm (nn.BatchNorm2d): Norm of the r * (k*k + 1) channels; in
            training mode (or without running statistics) it normalises with the
            statistics of the batch and updates its running ones, as BatchNorm does;
            in eval mode (tests, and training with ``norm_eval``) with its running
            statistics.
        fc1_weight (Tensor): (G, r * (k*k + 1)).
        kernel_size (int): Patch side k.
    """
    height, width = query.shape[-2:]
    key_padded = reflection_pad(key, kernel_size)
    bands = row_bands(height, width, key.shape[1] * kernel_size**2)
    batch_stats = norm.training or norm.running_mean is None
    if not batch_stats and not native_serves(query):
        # Running statistics: the norm itself runs on each band (and complexity
        # counters, which trace this path, see it as the norm it is).
        parts = [
            run_band(
                functools.partial(_hidden_band_eval, norm=norm, top=top, bottom=bottom,
                                  kernel_size=kernel_size), query, key_padded, fc1_weight)
            for top, bottom in bands
        ]
        return torch.cat(parts, dim=2)
    if batch_stats:
        mean, var, count = patch_statistics(query, key_padded, kernel_size, norm)
        if norm.training and norm.running_mean is not None:
            _update_running_stats(norm, mean.detach(), var.detach(), count)
    else:  # the native op with the running statistics' scale and shift (norm_eval, test)
        mean, var = norm.running_mean, norm.running_var
    scale = torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    if native_serves(query):
        dtype = native_dtype(query)
        hidden = ops.patch_hidden(*(t.to(dtype) for t in (query, key_padded, scale, shift,
                                                          fc1_weight)), kernel_size)
        return hidden.to(query.dtype)
    parts = [
        run_band(
            functools.partial(_hidden_band, top=top, bottom=bottom,
                              kernel_size=kernel_size), query, key_padded, scale, shift,
            fc1_weight) for top, bottom in bands
    ]
    return torch.cat(parts, dim=2)


@torch.no_grad()
def _update_running_stats(norm, mean, var, count):
    """The running-statistics update of BatchNorm (unbiased variance)."""
    norm.num_batches_tracked.add_(1)
    momentum = norm.momentum
    if momentum is None:  # cumulative average, as BatchNorm with momentum=None
        momentum = 1.0 / float(norm.num_batches_tracked)
    unbiased = var * (count / max(count - 1, 1))
    norm.running_mean.mul_(1 - momentum).add_(momentum * mean)
    norm.running_var.mul_(1 - momentum).add_(momentum * unbiased)


def _aggregate_band(hidden, fc2_weight, fc2_bias, value_padded, top, bottom,
                    kernel_size):
    batch, groups, _, width = hidden.shape
    num_pixels = (bottom - top) * width
    weights = torch.matmul(fc2_weight, hidden[:, :, top:bottom].flatten(2))
    weights = (weights + fc2_bias[:, None]).view(batch, 1, groups, kernel_size**2,
                                                 num_pixels)
    patches = unfold_band(value_padded, top, bottom, kernel_size)  # (B, C*k*k, n)
    patches = patches.view(batch, -1, groups, kernel_size**2, num_pixels)
    out = (patches * weights).sum(3)  # (B, C / G, G, n)
    return out.reshape(batch, -1, bottom - top, width)


def patch_aggregate(value, hidden, fc2_weight, fc2_bias, kernel_size):
    """``out[c] = sum_j w[c mod G, j] v_j[c]`` over each pixel's patch: (B, C, H, W).

    The weights ``w = fc2(hidden)`` (G x k*k per pixel) are made band by band too.

    Args:
        value (Tensor): (B, C, H, W).
        hidden (Tensor): (B, G', H, W), the input of fc2.
        fc2_weight (Tensor): (G * k*k, G'), rows ordered (group, patch position).
        fc2_bias (Tensor): (G * k*k, ).
        kernel_size (int): Patch side k.
    """
    height, width = value.shape[-2:]
    value_padded = reflection_pad(value, kernel_size)
    if native_serves(value):
        dtype = native_dtype(value)
        out = ops.patch_aggregate(*(t.to(dtype) for t in (value_padded, hidden, fc2_weight,
                                                           fc2_bias)), kernel_size)
        return out.to(value.dtype)
    if triton_serves(value):  # half precision runs as it is, accumulated in float32
        return torch.ops.acmix_mm.triton_patch_aggregate(
            *(t.to(value.dtype) for t in (value_padded, hidden, fc2_weight, fc2_bias)),
            kernel_size)
    bands = row_bands(height, width, value.shape[1] * kernel_size**2)
    parts = [
        run_band(
            functools.partial(_aggregate_band, top=top, bottom=bottom,
                              kernel_size=kernel_size), hidden, fc2_weight, fc2_bias,
            value_padded) for top, bottom in bands
    ]
    return torch.cat(parts, dim=2)
