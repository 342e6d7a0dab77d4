"""Complexity counting with mmengine's analysis, taught the ops our models use.

mmengine's counter (the one whose counts give the paper's baseline columns, e.g. 230
GFLOPs for RetinaNet PVT-T at 800x1333) skips ``scaled_dot_product_attention``: without
a handle, attention computed through it would be left out and ACmix models would look
cheaper than they are. Sliding-window attention runs as a custom autograd function that
the tracer cannot look into; its modules report their own count (k*k keys per query, as
the paper counts it) through ``attention_flops``. Like the counter, we count one
multiply-add as one FLOP.
"""
import os
import time
from math import prod

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape


def sdpa_flop_jit(inputs, outputs):
    """q k^T and (attention) v of scaled_dot_product_attention, as two matmuls."""
    query, key, value = (get_shape(v) for v in inputs[:3])
    return prod(query[:-1]) * key[-2] * (query[-1] + value[-1])


EXTRA_FLOP_HANDLES = {'aten::scaled_dot_product_attention': sdpa_flop_jit}


def complexity(model, inputs):
    """FLOPs (multiply-adds) and parameters of ``model(*inputs)``.

    Returns:
        tuple[int, int]: (flops, params).
    """
    reported = []

    def report(module, args, output):
        reported.append(module.attention_flops(args[0].shape[0], args[2]))

    hooks = [m.register_forward_hook(report) for m in model.modules()
             if hasattr(m, 'attention_flops')]
    # The convolution path is counted in the paper's form (fc, then the shift group
    # conv), also where it runs as their product (no more multiply-adds, heads <= 4).
    paper_form = [m for m in model.modules() if getattr(m, 'runs_fused', False)]
    for m in paper_form:
        m.runs_fused = False
    try:
        analyzer = FlopAnalyzer(model, inputs).set_op_handle(**EXTRA_FLOP_HANDLES)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        flops = analyzer.total()
    finally:
        for hook in hooks:
            hook.remove()
        for m in paper_form:
            m.runs_fused = True
    return flops + sum(reported), parameter_count(model)['']


# Running a whole mmdet / mmseg / mmpretrain model without data (FLOPs counting, speed
# benchmarks): its tensor-mode forward on one batch of fake data samples.
class TensorForward(nn.Module):
    """The model's tensor-mode forward on a fixed batch of data samples."""

    def __init__(self, model, data_samples):
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs):
        return self.model(inputs, self.data_samples, mode='tensor')


def data_samples_for(scope, height, width):
    meta = dict(img_shape=(height, width), ori_shape=(height, width),
                pad_shape=(height, width), batch_input_shape=(height, width),
                scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample
        return [DetDataSample(metainfo=meta)]
    if scope == 'mmpretrain':
        from mmpretrain.structures import DataSample
        return [DataSample(metainfo=meta)]
    from mmseg.structures import SegDataSample
    return [SegDataSample(metainfo=meta)]


MASK_ROIS = 100


def limit_mask_rois(model):
    """Make a cascade RoI head run its mask heads on the first ``MASK_ROIS`` RoIs."""
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None or not getattr(roi_head, 'with_mask', False) or \
            not hasattr(roi_head, 'num_stages'):
        return
    mask_forward = roi_head._mask_forward

    def first_rois_only(stage, x, rois):
        results = mask_forward(stage, x, rois[:MASK_ROIS])
        # Zero masks for the other RoIs keep the shapes the caller splits by.
        missing = rois.shape[0] - results['mask_preds'].shape[0]
        results['mask_preds'] = torch.cat(
            [results['mask_preds'],
             results['mask_preds'].new_zeros(missing, *results['mask_preds'].shape[1:])])
        return results

    roi_head._mask_forward = first_rois_only


def saved_bytes(fn):
    """Bytes autograd keeps for the backward pass of ``fn()``, each storage counted once
    (the same on every machine), and what ``fn()`` returned.

    Returns:
        tuple[int, Any]: (bytes, output).
    """
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


def peak_allocated_bytes(fn):
    """Peak of the bytes held through PyTorch's CPU allocator while ``fn()`` runs, above
    what was held before: every allocation and free (kernels' scratch buffers too),
    as the profiler records them. Independent of the C library's allocator, whose
    fragmentation makes the resident set of one step vary from run to run.

    Returns:
        int: The peak in bytes.
    """
    from torch.autograd import DeviceType
    from torch.profiler import profile

    # Kineto (the profiler's engine) logs every start and stop, and its failed look for
    # a GPU, to stderr; above its highest level (ERROR is 4) it says nothing, unless the
    # user asked for its log. Read when the profiler first starts.
    os.environ.setdefault('KINETO_LOG_LEVEL', '6')
    with profile(profile_memory=True) as prof:
        fn()
    events = sorted((event.start_ns(), event.nbytes())
                    for event in prof.profiler.kineto_results.events()
                    if event.name() == '[memory]' and
                    event.device_type() == DeviceType.CPU)
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak


def device_name(device):
    """The GPU's or the CPU's model name, to print beside every timing (ratios move
    with the machine)."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    import platform
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'cpu'


def timed(step, device):
    """Seconds one call of ``step`` takes, waiting for queued GPU work on both sides."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def best_times(steps, repeat, device, reset=None, warmup=2):
    """Best time of each step, the steps run alternately after a warm-up each.

    ``reset`` runs untimed before every call (e.g. to drop accumulated gradients).
    """
    reset = reset or (lambda: None)
    for step in steps:
        for _ in range(warmup):
            reset()
            step()
    times = [[] for _ in steps]
    for _ in range(repeat):
        for step, record in zip(steps, times):
            reset()
            record.append(timed(step, device))
    return [min(record) for record in times]


# The papers' settings: COCO 1333x800, ADE20K 2048x512, ImageNet 224x224.
DEFAULT_SHAPES = {'mmdet': (800, 1333), 'mmseg': (512, 2048), 'mmpretrain': (224, 224)}


def count_config(cfg, shape=None):
    """(flops, params, (H, W)) of the whole model of ``cfg`` on one image.

    Default input: 800x1333 for mmdet configs, 512x2048 for mmseg configs, 224x224 for
    mmpretrain configs.
    """
    from .runner_utils import init_scope
    init_scope(cfg)
    from mmengine.registry import MODELS
    height, width = shape or DEFAULT_SHAPES[cfg.default_scope]
    model = MODELS.build(cfg.model).eval()
    limit_mask_rois(model)
    wrapped = TensorForward(model, data_samples_for(cfg.default_scope, height, width))
    with torch.no_grad():
        flops, _ = complexity(wrapped, (torch.zeros(1, 3, height, width), ))
    params = sum(p.numel() for p in model.parameters())
    return flops, params, (height, width)
