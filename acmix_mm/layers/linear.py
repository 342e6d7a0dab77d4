"""Linear layers whose CPU products run through oneDNN.

torch's ``F.linear`` on the CPU calls MKL's sgemm, which on AMD CPUs takes its AVX2
kernels. :class:`NativeLinear` is an ``nn.Linear`` (same arguments, parameters and
checkpoints) whose forward runs ``acmix_mm.ops.linear`` (oneDNN's matrix product, the
native ``linear_of_maps``) where it fits and ``F.linear`` elsewhere (other devices and
dtypes, autocast, exports). Swin-ACmix-T's training step at 512x640: 1185 -> 729 ms,
PVT-ACmix-T's 677 -> 511 (alternated in one process; AMD EPYC, 2 cores).
"""
import torch.nn as nn
from mmcv.cnn.bricks.wrappers import Linear as MMCVLinear

from ..ops.linear import linear


class NativeLinear(nn.Linear):
    """``nn.Linear`` with oneDNN's product on the CPU (see the module's docstring);
    takes Linear's arguments."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)


# Made NativeLinear by native_linears: plain Linear and mmcv's wrapper of it (which the
# FFN of mmcv's transformer bricks builds; it only adds a path for empty inputs, which
# NativeLinear leaves to F.linear).
_PLAIN_LINEARS = (nn.Linear, MMCVLinear)


def native_linears(module):
    """Makes every plain ``nn.Linear`` (or mmcv's ``Linear``) in ``module``, itself
    included, a :class:`NativeLinear`, in place: the same parameters and state; other
    subclasses of Linear are left as they are. Returns ``module``."""
    for m in module.modules():
        if type(m) in _PLAIN_LINEARS:
            m.__class__ = NativeLinear
    return module
