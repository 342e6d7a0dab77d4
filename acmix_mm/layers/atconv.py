"""Attentive convolution (ATConv; Yu et al., 2025) and the layers AttNet builds on it.

ATConv keeps a convolution's k x k window but makes its kernel depend on the input, as
attention weights do: each image generates one k x k kernel per channel from its own
content (adaptive routing), and subtracts a learned share of that kernel's mean, so a
position is weighed against its neighbours (lateral inhibition). The value map is then
convolved depthwise with these per-image kernels.

All maps are NCHW. The norms are written here (as timm's ``LayerNorm2d`` and
``RmsNorm2d``, which the official AttNet uses) so that AttNet needs no timm.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer
from mmengine.model import BaseModule


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map.

    Args:
        num_channels (int): Channels C.
        eps (float): Added to the variance. Default: 1e-6.
    """

    def __init__(self, num_channels, eps=1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight,
                         self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class RMSNorm2d(nn.Module):
    """RMS norm over the channels of an NCHW map (a scale, no shift).

    Args:
        num_channels (int): Channels C.
        eps (float): Added to the mean square. Default: 1e-6.
    """

    def __init__(self, num_channels, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))

    def forward(self, x):
        scale = torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return x * scale * self.weight.view(1, -1, 1, 1)


class LayerScale2d(nn.Module):
    """Learned per-channel scale of a residual branch (NCHW), starting near zero.

    Args:
        num_channels (int): Channels C.
        init_value (float): Initial scale. Default: 1e-6.
    """

    def __init__(self, num_channels, init_value=1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((num_channels, ), float(init_value)))

    def forward(self, x):
        return x * self.gamma.view(1, -1, 1, 1)


class ATConv(BaseModule):
    """Attentive convolution: a depthwise k x k convolution with per-image kernels.

    Per image and channel c: the kernel is ``kernel_gen(act(pool(kernel_proj(x))_c))``,
    where ``pool`` averages the flattened H*W positions into k*k bins (so the kernel's
    taps come from the image's own layout); then ``sigmoid(inhibition_logit_c)`` times
    the kernel's mean is subtracted from it. The output is ``out_proj`` of
    ``value_proj(x)`` convolved with these kernels (zero padding, stride 1).

    ``kernel_proj`` is a 1x1 convolution and the pooling an average, so the two
    commute: we pool first and project the k*k pooled vectors, which gives the same
    kernels for a fraction of the cost (C*C*k*k instead of C*C*H*W multiply-adds).

    Args:
        embed_dims (int): Channels C.
        kernel_size (int): Side k of the generated kernels (odd). Default: 3.
        bias (bool): Bias of the projections and of the kernel generator.
            Default: True.
        act_cfg (dict): Activation between pooling and kernel generation.
            Default: dict(type='GELU').
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 embed_dims,
                 kernel_size=3,
                 bias=True,
                 act_cfg=dict(type='GELU'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if kernel_size % 2 != 1:
            raise ValueError(f'ATConv needs an odd kernel_size, got {kernel_size}.')
        self.embed_dims = embed_dims
        self.kernel_size = kernel_size
        taps = kernel_size * kernel_size
        self.kernel_proj = nn.Conv2d(embed_dims, embed_dims, 1, bias=bias)
        self.kernel_act = build_activation_layer(act_cfg)
        self.kernel_gen = nn.Linear(taps, taps, bias=bias)
        self.value_proj = nn.Conv2d(embed_dims, embed_dims, 1, bias=bias)
        self.out_proj = nn.Conv2d(embed_dims, embed_dims, 1, bias=bias)
        # sigmoid(0) = 0.5: half of each kernel's mean is inhibited at the start.
        self.inhibition_logit = nn.Parameter(torch.zeros(embed_dims))

    def generate_kernels(self, x):
        """The per-image, per-channel kernels, shape (B, C, k, k)."""
        batch, channels = x.shape[:2]
        k = self.kernel_size
        pooled = F.adaptive_avg_pool1d(x.flatten(2), k * k)  # (B, C, k*k)
        weight = self.kernel_proj.weight.view(channels, channels)
        kernels = torch.einsum('oc,bct->bot', weight, pooled)
        if self.kernel_proj.bias is not None:
            kernels = kernels + self.kernel_proj.bias.view(1, -1, 1)
        kernels = self.kernel_gen(self.kernel_act(kernels))
        mean = kernels.mean(dim=2, keepdim=True)
        inhibition = torch.sigmoid(self.inhibition_logit).view(1, -1, 1)
        return (kernels - inhibition * mean).view(batch, channels, k, k)

    def forward(self, x):
        batch, channels, height, width = x.shape
        kernels = self.generate_kernels(x)
        values = self.value_proj(x)
        # One grouped convolution over the batch: group b*C + c holds image b's
        # channel c and its own kernel.
        out = F.conv2d(
            values.reshape(1, batch * channels, height, width),
            kernels.reshape(batch * channels, 1, self.kernel_size, self.kernel_size),
            padding=self.kernel_size // 2,
            groups=batch * channels)
        return self.out_proj(out.view(batch, channels, height, width))


class GatedConvFFN(BaseModule):
    """AttNet's channel mixer: a gated FFN with a 3x3 depthwise convolution on the gate.

    ``fc2(norm(act(dwconv(a)) * b))`` where ``a, b`` are the halves of ``fc1(x)``.

    Args:
        embed_dims (int): Input and output channels.
        hidden_dims (int): Channels of each half.
        with_norm (bool): RMS norm before ``fc2``. Default: True.
        act_cfg (dict): Activation of the gate. Default: dict(type='GELU').
        drop_rate (float): Dropout after the gating and after ``fc2``. Default: 0.
        init_cfg (dict, optional): Initialization config. Default: None.
    """

    def __init__(self,
                 embed_dims,
                 hidden_dims,
                 with_norm=True,
                 act_cfg=dict(type='GELU'),
                 drop_rate=0.,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fc1 = nn.Conv2d(embed_dims, 2 * hidden_dims, 1)
        self.dwconv = nn.Conv2d(
            hidden_dims, hidden_dims, 3, padding=1, groups=hidden_dims)
        self.act = build_activation_layer(act_cfg)
        self.norm = RMSNorm2d(hidden_dims) if with_norm else nn.Identity()
        self.fc2 = nn.Conv2d(hidden_dims, embed_dims, 1)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, x):
        gate, value = self.fc1(x).chunk(2, dim=1)
        x = self.drop(self.norm(self.act(self.dwconv(gate)) * value))
        return self.drop(self.fc2(x))
