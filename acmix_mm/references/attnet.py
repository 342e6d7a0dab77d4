"""AttNet (Attentive Convolution) as the official code computes it, with its key layout
and arch table."""
import torch
import torch.nn as nn
import torch.nn.functional as F

# The official arch table (models/AttNet.py): depths, dims, GLU norm, layer scale; every
# arch has expansion rates (8, 8, 4, 4), 3x3 kernels and a depthwise conv in the GLU.
OFFICIAL_ARCHS = {
    'xxs': ([2, 2, 4, 2], [32, 64, 128, 240], False, False),
    'xs': ([2, 2, 7, 2], [40, 80, 160, 320], False, True),
    's': ([2, 3, 10, 3], [40, 80, 160, 320], False, False),
    't1': ([2, 3, 12, 3], [48, 96, 224, 384], True, True),
    't2': ([3, 3, 16, 3], [64, 128, 288, 512], True, True),
    't3': ([4, 4, 26, 4], [72, 144, 320, 576], True, True),
    't4': ([5, 5, 28, 5], [96, 192, 384, 768], True, True),
}
# Parameters with the 1000-class classifier, as the official file states them (M).
OFFICIAL_PARAMS = {'xxs': 2.85, 'xs': 5.55, 's': 7.68, 't1': 13.71, 't2': 27.01,
                   't3': 49.18, 't4': 87.32}


class ReferenceAttNet(nn.Module):
    """AttNet as the official code computes it, with its key layout (downsample_layers,
    stages.i.j.token_mixer / channel_mixer / norm_1 / layer_scale_1, norm, head)."""

    class LayerNorm2d(nn.LayerNorm):  # timm's: normalise the channels of NCHW maps

        def forward(self, x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class RmsNorm2d(nn.Module):  # timm's rms_norm2d with an affine weight

        def __init__(self, dim):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))

        def forward(self, x):
            x = x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-6)
            return x * self.weight.reshape(1, -1, 1, 1)

    class LayerScale(nn.Module):

        def __init__(self, dim):
            super().__init__()
            self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

        def forward(self, x):
            return x * self.gamma.reshape(1, -1, 1, 1)

    class ATConv(nn.Module):

        def __init__(self, dim):
            super().__init__()
            self.kernel_proj = nn.Conv2d(dim, dim, 1)
            self.pool = nn.AdaptiveAvgPool1d(9)
            self.kernel_act = nn.GELU()
            self.kernel_gen = nn.Linear(9, 9)
            self.x_proj = nn.Conv2d(dim, dim, 1)
            self.proj = nn.Conv2d(dim, dim, 1)
            self.difference_control = nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            batch, channels, height, width = x.shape
            # Projection on the full map, then pooling (ours pools first).
            kernels = self.pool(self.kernel_proj(x).view(batch, channels, -1))
            kernels = self.kernel_gen(self.kernel_act(kernels)).view(batch, channels, 3, 3)
            kernels = kernels - torch.sigmoid(self.difference_control).view(1, -1, 1, 1) * \
                kernels.mean(dim=(2, 3), keepdim=True)
            # The per-image depthwise convolution as one grouped convolution.
            out = F.conv2d(self.x_proj(x).reshape(1, batch * channels, height, width),
                           kernels.reshape(batch * channels, 1, 3, 3), padding=1,
                           groups=batch * channels)
            return self.proj(out.view(batch, channels, height, width))

    class GLU(nn.Module):

        def __init__(self, dim, hidden, norm):
            super().__init__()
            self.fc1 = nn.Conv2d(dim, hidden * 2, 1)
            self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
            self.norm_layer = ReferenceAttNet.RmsNorm2d(hidden) if norm else nn.Identity()
            self.act = nn.GELU()
            self.fc2 = nn.Conv2d(hidden, dim, 1)

        def forward(self, x):
            x, v = self.fc1(x).chunk(2, dim=1)
            return self.fc2(self.norm_layer(self.act(self.dwconv(x)) * v))

    class Block(nn.Module):

        def __init__(self, dim, exp_rate, norm, layer_scale):
            super().__init__()
            ref = ReferenceAttNet
            self.token_mixer = ref.ATConv(dim)
            self.channel_mixer = ref.GLU(dim, int(2 * int(dim * exp_rate) / 3), norm)
            self.layer_scale_1 = ref.LayerScale(dim) if layer_scale else nn.Identity()
            self.layer_scale_2 = ref.LayerScale(dim) if layer_scale else nn.Identity()
            self.norm_1 = ref.LayerNorm2d(dim, eps=1e-6)
            self.norm_2 = ref.LayerNorm2d(dim, eps=1e-6)

        def forward(self, x):
            x = x + self.layer_scale_1(self.token_mixer(self.norm_1(x)))
            return x + self.layer_scale_2(self.channel_mixer(self.norm_2(x)))

    @staticmethod
    def conv_bn(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout))

    def __init__(self, arch):
        super().__init__()
        depths, dims, norm, layer_scale = OFFICIAL_ARCHS[arch]
        self.downsample_layers = nn.ModuleList([
            nn.Sequential(self.conv_bn(3, dims[0] // 2), nn.GELU(),
                          self.conv_bn(dims[0] // 2, dims[0]))
        ] + [self.conv_bn(dims[i], dims[i + 1]) for i in range(3)])
        self.stages = nn.ModuleList([
            nn.Sequential(*[self.Block(dims[i], (8, 8, 4, 4)[i], norm, layer_scale)
                            for _ in range(depths[i])]) for i in range(4)
        ])
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], 1000)

    def stage_outputs(self, x):
        outs = []
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
            outs.append(x)
        return outs


def randomise(model):
    """Values far from the initial ones, so that every weight shows in the outputs
    (layer scales at 1e-6 would hide the blocks, zero inhibition logits their sign)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(('gamma', 'difference_control')) or 'norm' in name:
                param.copy_(torch.randn_like(param) * 0.5 + (0 if 'bias' in name else 0.5))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
