"""The ACmix operator as the official ResNet-ACmix computes it (keys and values
unfolded k*k-fold, position encoding added to each unfolded key), and a ResNet built
from it with the official key layout, whose state dicts therefore are official-layout
checkpoints."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backbones import resnet_official_to_acmix
from ..layers import ACmix


class ReferenceACmix(nn.Module):
    """The operator as the official code writes it, with its parameter names."""

    def __init__(self, in_planes, out_planes, kernel_att=7, head=4, kernel_conv=3,
                 stride=1):
        super().__init__()
        self.head, self.kernel_att, self.stride = head, kernel_att, stride
        self.head_dim = out_planes // head
        self.conv1 = nn.Conv2d(in_planes, out_planes, 1)
        self.conv2 = nn.Conv2d(in_planes, out_planes, 1)
        self.conv3 = nn.Conv2d(in_planes, out_planes, 1)
        self.conv_p = nn.Conv2d(2, self.head_dim, 1)
        self.fc = nn.Conv2d(3 * head, kernel_conv**2, 1, bias=False)
        self.dep_conv = nn.Conv2d(kernel_conv**2 * self.head_dim, out_planes, kernel_conv,
                                  stride, kernel_conv // 2, groups=self.head_dim,
                                  bias=False)
        self.rate1 = nn.Parameter(torch.rand(1))
        self.rate2 = nn.Parameter(torch.rand(1))

    def forward(self, x):
        q, k, v = self.conv1(x), self.conv2(x), self.conv3(x)
        b, c, h, w = q.shape
        s, ka, hd = self.stride, self.kernel_att, self.head_dim
        h_out, w_out = -(-h // s), -(-w // s)
        loc = torch.stack(torch.meshgrid(torch.linspace(-1, 1, w, dtype=x.dtype),
                                         torch.linspace(-1, 1, h, dtype=x.dtype),
                                         indexing='xy'))[None]
        pe = self.conv_p(loc)
        pad = nn.ReflectionPad2d(ka // 2)

        def unfold(t):
            return F.unfold(pad(t), ka, stride=s).view(t.shape[0], hd, ka * ka, h_out,
                                                       w_out)

        q_att = q.view(b * self.head, hd, h, w)[:, :, ::s, ::s] * hd**-0.5
        att = (q_att.unsqueeze(2) * (unfold(k.view(b * self.head, hd, h, w)) +
                                     pe[:, :, ::s, ::s].unsqueeze(2) - unfold(pe))).sum(1)
        att = att.softmax(1)
        out_att = (att.unsqueeze(1) * unfold(v.view(b * self.head, hd, h, w))).sum(2)
        pieces = torch.cat([t.view(b, self.head, hd, h * w) for t in (q, k, v)], 1)
        maps = self.fc(pieces).permute(0, 2, 1, 3).reshape(b, -1, h, w)
        return self.rate1 * out_att.view(b, c, h_out, w_out) + self.rate2 * self.dep_conv(maps)


def ours_from_reference(reference, in_channels, out_channels, stride):
    """Our layer with the reference's weights, through the checkpoint converter."""
    prefix = 'layer1.0.conv2.'
    converted, _ = resnet_official_to_acmix(
        {prefix + k: v for k, v in reference.state_dict().items()})
    ours = ACmix(in_channels, out_channels, stride=stride)
    ours.load_state_dict({k[len(prefix):]: v for k, v in converted.items()})
    return ours


class ReferenceResNetACmix(nn.Module):
    """The official ResNet-ACmix structure and key layout (torchvision-style)."""

    class Bottleneck(nn.Module):

        def __init__(self, inplanes, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = ReferenceACmix(planes, planes, stride=stride)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.downsample = None
            if stride != 1 or inplanes != planes * 4:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * 4))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = F.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return F.relu(out + identity)

    def __init__(self, layers):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stage = []
            for j in range(blocks):
                stage.append(self.Bottleneck(inplanes, planes, 2 if i and not j else 1))
                inplanes = planes * 4
            setattr(self, f'layer{i + 1}', nn.Sequential(*stage))
        self.fc = nn.Linear(2048, 1000)
        for name, p in self.named_parameters():  # norms away from identity
            if 'bn' in name or 'downsample.1' in name:
                nn.init.normal_(p, 1.0 if name.endswith('weight') else 0.0, 0.1)
        for name, buf in self.named_buffers():
            if 'running_var' in name:
                buf.uniform_(0.5, 1.5)
            elif 'running_mean' in name:
                buf.normal_(0, 0.1)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        outs = []
        for i in range(1, 5):
            x = getattr(self, f'layer{i}')(x)
            outs.append(x)
        return outs
