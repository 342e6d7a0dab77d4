"""SAN's patchwise attention module as the official code (hszhao/SAN) computes it, its
CuPy aggregation written with unfold (patches unfolded k*k-fold), plus, for ACmix, the
convolution path as the official ResNet-ACmix writes it; and a SAN built from them with
the official key layout, whose state dicts therefore are official-layout checkpoints."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import san_official_to_acmix
from ..layers import TokenACmix


class ReferenceSAM(nn.Module):
    """SAN's patchwise attention module with the official names (and, with
    ``acmix=True``, an ACmix convolution path named as the official ResNet-ACmix)."""

    def __init__(self, in_planes, rel_planes, out_planes, share_planes=8, kernel_size=7,
                 acmix=False, kernel_conv=3):
        super().__init__()
        self.k, self.acmix, self.rel = kernel_size, acmix, rel_planes
        self.conv1 = nn.Conv2d(in_planes, rel_planes, 1)
        self.conv2 = nn.Conv2d(in_planes, rel_planes, 1)
        self.conv3 = nn.Conv2d(in_planes, out_planes, 1)
        k2 = kernel_size**2
        self.conv_w = nn.Sequential(
            nn.BatchNorm2d(rel_planes * (k2 + 1)), nn.ReLU(inplace=True),
            nn.Conv2d(rel_planes * (k2 + 1), out_planes // share_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes // share_planes), nn.ReLU(inplace=True),
            nn.Conv2d(out_planes // share_planes, k2 * out_planes // share_planes, 1))
        self.pad = nn.ReflectionPad2d(kernel_size // 2)
        if acmix:
            pieces = 2 + out_planes // rel_planes
            self.fc = nn.Conv2d(pieces, kernel_conv**2, 1, bias=False)
            self.dep_conv = nn.Conv2d(kernel_conv**2 * rel_planes, out_planes, kernel_conv,
                                      padding=kernel_conv // 2, groups=rel_planes,
                                      bias=False)
            self.rate1 = nn.Parameter(torch.rand(1))
            self.rate2 = nn.Parameter(torch.rand(1))

    def forward(self, x):
        b, _, h, w = x.shape
        q, k, v = self.conv1(x), self.conv2(x), self.conv3(x)
        patches = torch.cat([q.view(b, -1, 1, h * w),
                             F.unfold(self.pad(k), self.k).view(b, -1, 1, h * w)], 1)
        weights = self.conv_w(patches).view(b, -1, self.k**2, h * w)
        groups = weights.shape[1]
        values = F.unfold(self.pad(v), self.k).view(b, -1, groups, self.k**2, h * w)
        out = (values * weights.unsqueeze(1)).sum(3).view(b, -1, h, w)
        if not self.acmix:
            return out
        pieces = torch.cat([t.view(b, -1, self.rel, h * w) for t in (q, k, v)], 1)
        maps = self.fc(pieces).permute(0, 2, 1, 3).reshape(b, -1, h, w)
        return self.rate1 * out + self.rate2 * self.dep_conv(maps)


class ReferenceBottleneck(nn.Module):

    def __init__(self, planes, kernel_size, acmix):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(planes)
        self.sam = ReferenceSAM(planes, planes // 16, planes // 4, 8, kernel_size, acmix)
        self.bn2 = nn.BatchNorm2d(planes // 4)
        self.conv = nn.Conv2d(planes // 4, planes, 1)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.sam(out)))
        return self.conv(out) + x


class ReferenceSAN(nn.Module):
    """hszhao/SAN's ``SAN`` (patchwise), optionally with ACmix, official names."""

    def __init__(self, layers, kernels=(3, 7, 7, 7, 7), acmix=False, num_classes=1000):
        super().__init__()
        c = 64
        self.conv_in, self.bn_in = nn.Conv2d(3, c, 1, bias=False), nn.BatchNorm2d(c)
        for i, (n, k) in enumerate(zip(layers, kernels)):
            prev, c = c, (64 if i == 0 else c * (4 if i == 1 else 2))
            setattr(self, f'conv{i}', nn.Conv2d(prev, c, 1, bias=False))
            setattr(self, f'bn{i}', nn.BatchNorm2d(c))
            setattr(self, f'layer{i}',
                    nn.Sequential(*[ReferenceBottleneck(c, k, acmix) for _ in range(n)]))
        self.fc = nn.Linear(c, num_classes)

    def stages(self, x):
        x = F.relu(self.bn_in(self.conv_in(x)))
        outs = []
        for i in range(5):
            x = F.max_pool2d(x, 2)
            x = getattr(self, f'layer{i}')(getattr(self, f'conv{i}')(x))
            x = F.relu(getattr(self, f'bn{i}')(x))
            outs.append(x)
        return outs[1:]


def randomise_norms(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)


def ours_from_reference(reference, in_planes, acmix):
    """Our layer (TokenACmix) with the reference module's weights, by the converter."""
    prefix = 'layer1.0.sam.'
    converted, _ = san_official_to_acmix(
        {prefix + k: v for k, v in reference.state_dict().items()})
    out_planes = reference.conv3.out_channels
    ours = TokenACmix(
        out_planes,
        4,
        dict(type='PatchwiseAttentionPath', kernel_size=reference.k),
        in_dims=in_planes,
        qk_dims=reference.rel,
        with_conv_path=acmix,
        fc_bias=False).to(reference.conv1.weight.dtype)
    ours_prefix = 'stages.1.blocks.0.attn.'
    ours.load_state_dict({k[len(ours_prefix):]: v for k, v in converted.items()})
    return ours


def tokens_forward(layer, x):
    b, _, h, w = x.shape
    return layer(x.flatten(2).transpose(1, 2), (h, w)).transpose(1, 2).reshape(b, -1, h, w)
