"""Synchronised BatchNorm for distributed training on CPUs (gloo).

torch's ``SyncBatchNorm`` runs on GPUs only, and ``DistributedDataParallel`` refuses a
CPU model that holds one ("SyncBatchNorm layers only work with GPU modules"); mmengine
reverts SyncBN to BatchNorm only for single-process runs. mmseg's recipes (Semantic FPN,
UperNet) and ``--sync-bn`` use SyncBN, so a CPU run over several processes converts it
into :class:`CPUSyncBatchNorm`, which computes the batch statistics over all processes
with all-reduces that autograd differentiates, so outputs, gradients and running
statistics equal those of one process given the whole batch.
"""
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


class AllReduceSum(torch.autograd.Function):
    """Sum over the processes; every process's input gets the summed gradient."""

    @staticmethod
    def forward(ctx, tensor):
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def process_group_size():
    """The number of processes of the default group, 1 without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics span every process of the default group.

    Takes the arguments of :class:`torch.nn.BatchNorm2d` and accepts inputs of any
    rank >= 2, as ``SyncBatchNorm``. With one process, or in eval mode, it is a plain
    BatchNorm. Not a subclass of ``SyncBatchNorm`` on purpose: DDP refuses those on CPU.
    """

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {input.dim()}D input)')

    def forward(self, x):
        if not self.training or process_group_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        dtype = x.dtype
        if dtype in (torch.float16, torch.bfloat16):  # statistics in float32
            x = x.float()
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.new_tensor([x.numel() // x.shape[1]])
        totals = AllReduceSum.apply(torch.cat([x.sum(dims), count]))
        count = totals[-1].detach()
        mean = totals[:-1] / count
        # Two passes (mean first) so that E[x^2] - E[x]^2 cannot cancel.
        centred = x - mean.view(shape)
        var = AllReduceSum.apply(centred.square().sum(dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count)
        return out.to(dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean, var, count):
        self.num_batches_tracked += 1
        momentum = self.momentum
        if momentum is None:  # cumulative moving average, as torch's BatchNorm
            momentum = 1.0 / float(self.num_batches_tracked)
        unbiased = var * (count / (count - 1).clamp(min=1))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def _sync_batchnorm_types():
    types = [nn.SyncBatchNorm]
    try:
        from mmcv.ops import SyncBatchNorm as MMCVSyncBatchNorm
        types.append(MMCVSyncBatchNorm)
    except ImportError:  # mmcv built without its ops
        pass
    return tuple(types)


def convert_to_cpu_sync_batchnorm(module):
    """Replace every torch or mmcv ``SyncBatchNorm`` in ``module`` by a
    :class:`CPUSyncBatchNorm` with the same weights, statistics and settings.

    Returns:
        nn.Module: ``module`` itself, or the new norm if ``module`` is one.
    """
    if isinstance(module, _sync_batchnorm_types()):
        like = next(iter([*module.parameters(), *module.buffers()]), None)
        norm = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum,
                                module.affine, module.track_running_stats)
        if like is not None:
            norm = norm.to(device=like.device, dtype=like.dtype)
        if module.affine:
            with torch.no_grad():
                norm.weight.copy_(module.weight)
                norm.bias.copy_(module.bias)
            norm.weight.requires_grad_(module.weight.requires_grad)
            norm.bias.requires_grad_(module.bias.requires_grad)
        if module.track_running_stats:
            norm.running_mean.copy_(module.running_mean)
            norm.running_var.copy_(module.running_var)
            if getattr(module, 'num_batches_tracked', None) is not None:
                norm.num_batches_tracked.copy_(module.num_batches_tracked)
        norm.train(module.training)
        return norm
    for name, child in module.named_children():
        converted = convert_to_cpu_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
