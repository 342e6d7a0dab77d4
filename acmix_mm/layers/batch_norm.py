"""BatchNorm2d that normalises NCHW-contiguous CPU maps with the native operator.

SAN's maps are wide and its channels few, the layout where torch's CPU BatchNorm sums
each channel in a scalar loop (SAN-19's training step at 512x640 spent ~70 ms in it,
AMD EPYC, 2 cores). :class:`NativeBatchNorm2d` is an ``nn.BatchNorm2d`` (same arguments,
parameters, buffers and checkpoints) whose forward with batch statistics runs
``acmix_mm.ops.batch_norm_nchw`` where it fits, and updates the running statistics as
BatchNorm does; everything else (eval mode, other devices and layouts, no affine
parameters, exports) is BatchNorm's own forward.
"""
import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer

from ..ops.batch_norm import batch_norm_nchw, batch_norm_nchw_usable


class NativeBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with the native batch-statistics kernel on the CPU (see the
    module's docstring); takes BatchNorm2d's arguments."""

    def forward(self, x):
        batch_stats = self.training or self.running_mean is None
        if not (batch_stats and batch_norm_nchw_usable(x, self.weight, self.bias)):
            return super().forward(x)
        self._check_input_dim(x)
        out, mean, var = batch_norm_nchw(x, self.weight, self.bias, self.eps)
        if self.training and self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean, var, x.numel() // x.shape[1])
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean, var, count):
        """BatchNorm's update: the momentum's (or, without one, the cumulative) average
        of the batch mean and the unbiased batch variance."""
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(var * (count / (count - 1)), momentum)


def build_norm(norm_cfg, num_features):
    """``mmcv.cnn.build_norm_layer(norm_cfg, num_features)[1]``, a plain BatchNorm2d
    (``type='BN'``) made a :class:`NativeBatchNorm2d` with the same settings."""
    norm = build_norm_layer(norm_cfg, num_features)[1]
    if type(norm) is not nn.BatchNorm2d:
        return norm
    native = NativeBatchNorm2d(num_features, eps=norm.eps, momentum=norm.momentum,
                               affine=norm.affine,
                               track_running_stats=norm.track_running_stats)
    for name, param in norm.named_parameters():  # requires_grad=False stays so
        getattr(native, name).requires_grad_(param.requires_grad)
    return native
