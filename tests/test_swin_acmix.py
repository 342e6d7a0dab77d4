"""The SwinACmix backbone against a reference written as the official Swin-ACmix.

The reference keeps the official key layout (``layers.i.blocks.j.attn.qkv`` ...), so its
state dict stands for an official checkpoint.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import acmix_mm  # noqa: F401
from acmix_mm.backbones import SwinACmix, swin_official_to_acmix
from acmix_mm.checkpoint import CheckpointError

from conftest import run_tool


def window_partition(x, window):
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows, window, h, w):
    b = windows.shape[0] // (h * w // window**2)
    x = windows.view(b, h // window, w // window, window, window, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


class ReferenceBlock(nn.Module):

    def __init__(self, dim, heads, resolution, shift, window=7):
        super().__init__()
        self.dim, self.heads, self.resolution = dim, heads, resolution
        if min(resolution) <= window:  # the official rule
            shift, window = False, min(resolution)
        self.window, self.shift = window, window // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.attn.relative_position_bias_table = nn.Parameter(
            torch.randn((2 * window - 1)**2, heads) * 0.5)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window),
                                            indexing='ij')).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.attn.register_buffer('relative_position_index',
                                  rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.attn.fc = nn.Conv2d(3 * heads, 9, 1)
        self.attn.dep_conv = nn.Conv2d(9 * dim // heads, dim, 3, padding=1,
                                       groups=dim // heads, bias=False)
        self.attn.rate1 = nn.Parameter(torch.rand(1))
        self.attn.rate2 = nn.Parameter(torch.rand(1))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, 4 * dim)
        self.mlp.fc2 = nn.Linear(4 * dim, dim)
        mask = None
        if self.shift:
            h, w = resolution
            regions = torch.zeros(1, h, w, 1)
            cuts = (slice(0, -window), slice(-window, -self.shift), slice(-self.shift, None))
            for i, rows in enumerate(cuts):
                for j, cols in enumerate(cuts):
                    regions[:, rows, cols] = 3 * i + j
            regions = window_partition(regions, window).squeeze(-1)
            mask = (regions[:, None] - regions[:, :, None]).ne(0).float() * -100.0
        self.register_buffer('attn_mask', mask)

    def attention(self, x):
        b, h, w, c = x.shape
        heads, window, attn = self.heads, self.window, self.attn
        qkv = attn.qkv(x)
        pieces = qkv.reshape(b, h * w, 3 * heads, -1).permute(0, 2, 1, 3)
        f_conv = attn.fc(pieces).permute(0, 3, 1, 2).reshape(b, -1, h, w)
        out_conv = attn.dep_conv(f_conv).permute(0, 2, 3, 1)
        windows = window_partition(qkv, window)
        n = window * window
        q, k, v = windows.reshape(-1, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        logits = (q * (c // heads)**-0.5) @ k.transpose(-2, -1)
        bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
        logits = logits + bias.view(n, n, -1).permute(2, 0, 1)
        if self.attn_mask is not None:
            nw = self.attn_mask.shape[0]
            logits = logits.view(-1, nw, heads, n, n) + self.attn_mask[None, :, None]
            logits = logits.view(-1, heads, n, n)
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, c)
        out = window_reverse(attn.proj(out), window, h, w)
        return attn.rate1 * out + attn.rate2 * out_conv

    def forward(self, x):
        h, w = self.resolution
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = self.attention(y)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class ReferenceSwinACmix(nn.Module):

    def __init__(self, img_size=224, embed_dim=32, depths=(2, 2, 2, 2), heads=(2, 4, 4, 8)):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, 4, 4)
        self.patch_embed.norm = nn.LayerNorm(embed_dim)
        self.layers = nn.ModuleList()
        resolution, dim = img_size // 4, embed_dim
        for i, depth in enumerate(depths):
            layer = nn.Module()
            layer.blocks = nn.ModuleList([
                ReferenceBlock(dim, heads[i], (resolution, resolution), j % 2 == 1)
                for j in range(depth)])
            if i < len(depths) - 1:
                layer.downsample = nn.Module()
                layer.downsample.norm = nn.LayerNorm(4 * dim)
                layer.downsample.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
                resolution, dim = resolution // 2, dim * 2
            self.layers.append(layer)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1000)
        for p in self.parameters():  # norms away from identity
            if p.dim() == 1:
                nn.init.normal_(p, 0.5, 0.2)

    def forward(self, x):
        """Each stage's output before its patch merging; the last one normed."""
        x = self.patch_embed.norm(self.patch_embed.proj(x).flatten(2).transpose(1, 2))
        outs = []
        for layer in self.layers:
            for block in layer.blocks:
                x = block(x)
            outs.append(x)
            if hasattr(layer, 'downsample'):
                b, n, c = x.shape
                side = int(n**0.5)
                g = x.view(b, side, side, c)
                g = torch.cat([g[:, 0::2, 0::2], g[:, 1::2, 0::2], g[:, 0::2, 1::2],
                               g[:, 1::2, 1::2]], -1).view(b, -1, 4 * c)
                x = layer.downsample.reduction(layer.downsample.norm(g))
        outs[-1] = self.norm(outs[-1])
        return outs


SMALL_ARCH = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[2, 4, 4, 8])


@pytest.fixture(scope='module')
def official_small(tmp_path_factory):
    torch.manual_seed(0)
    reference = ReferenceSwinACmix().eval()
    path = tmp_path_factory.mktemp('ckpt') / 'swin_acmix_official.pth'
    torch.save({'model': reference.state_dict(), 'epoch': 300}, path)
    return reference, str(path)


def stage_outputs(model, x):
    """Our stage outputs before patch merging (the output norms are ours, not official)."""
    tokens, hw_shape = model.patch_embed(x)
    outs = []
    for stage in model.stages:
        tokens, next_shape, out, _ = stage(tokens, hw_shape)
        outs.append(out)
        hw_shape = next_shape
    outs[-1] = model.norm3(outs[-1])
    return outs


def test_converter_places_every_official_key(official_small):
    reference, _ = official_small
    official = reference.state_dict()
    converted, discarded = swin_official_to_acmix(official)
    own = SwinACmix(SMALL_ARCH).state_dict()
    assert set(converted) <= set(own)
    assert all(converted[k].shape == own[k].shape for k in converted)
    # Only the extra output norms are not in an official checkpoint.
    assert set(own) - set(converted) == {f'norm{i}.{p}' for i in range(3)
                                         for p in ('weight', 'bias')}
    left_out = {line.split(':')[0] for line in discarded}
    assert left_out == {'head.weight', 'head.bias'} | {
        k for k in official if k.endswith(('relative_position_index', 'attn_mask'))}


@pytest.mark.parametrize('size', [224, 448])
def test_official_checkpoint_gives_the_same_features(official_small, size):
    reference, path = official_small
    torch.manual_seed(size)
    if size != 224:  # the official model fixes its input size at construction
        state = {k: v for k, v in reference.state_dict().items() if 'attn_mask' not in k}
        reference = ReferenceSwinACmix(img_size=size).eval()
        reference.load_state_dict(state, strict=False)
    model = SwinACmix(SMALL_ARCH, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected, got = reference(x), stage_outputs(model, x)
    for a, b in zip(got, expected):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-4


def test_any_input_size_and_conventions():
    model = SwinACmix(SMALL_ARCH, out_indices=(0, 2, 3), frozen_stages=1, with_cp=True)
    model.init_weights()
    model.train()
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert not any(p.requires_grad for p in model.stages[0].parameters())
    assert all(p.requires_grad for p in model.stages[1].parameters())
    x = torch.randn(1, 3, 97, 131, requires_grad=True)
    outs = model(x)
    assert [o.shape[1:] for o in outs] == [(32, 25, 33), (128, 7, 9), (256, 4, 5)]
    sum(o.sum() for o in outs).backward()
    assert model.stages[3].blocks[0].attn.conv_path.fc.weight.grad is not None


def test_rate_init_one_zero_computes_plain_swin_from_a_swin_checkpoint(official_small,
                                                                      tmp_path):
    reference = copy.deepcopy(official_small[0])  # its rates are changed below
    # A plain Swin checkpoint: the same layout without the ACmix tensors.
    acmix_only = ('.attn.fc.', '.attn.dep_conv.', '.attn.rate')
    plain = {k: v for k, v in reference.state_dict().items()
             if not any(part in k for part in acmix_only)}
    path = tmp_path / 'swin.pth'
    torch.save({'model': plain}, path)
    model = SwinACmix(SMALL_ARCH, rate_init=(1.0, 0.0),
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    model.eval()
    for block in reference.modules():
        if isinstance(block, ReferenceBlock):
            block.attn.rate1.data.fill_(1.0)
            block.attn.rate2.data.fill_(0.0)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(stage_outputs(model, x), reference(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_unknown_arch_and_misfit_checkpoint_are_clear(official_small):
    with pytest.raises(ValueError, match="Unknown SwinACmix arch 'huge'"):
        SwinACmix('huge')
    _, path = official_small
    model = SwinACmix('tiny', init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError, match='shape mismatches'):
        model.init_weights()


@pytest.mark.parametrize('arch,official_params', [('tiny', 28_649_908),
                                                  ('small', 50_345_080)])
def test_sizes_equal_the_official_models(arch, official_params):
    model = SwinACmix(arch)
    ours = sum(p.numel() for p in model.parameters())
    head = 768 * 1000 + 1000
    extra_norms = 2 * (96 + 192 + 384)  # mmdet-style output norms of stages 0-2
    assert ours - extra_norms + head == official_params


def test_convert_ckpt_tool_writes_a_loadable_checkpoint(official_small, tmp_path):
    reference, path = official_small
    out = tmp_path / 'swin_acmix_converted.pth'
    proc = run_tool('tools/convert_ckpt.py', path, str(out))
    assert proc.returncode == 0, proc.stderr
    assert 'official Swin / Swin-ACmix layout' in proc.stdout
    assert 'head.weight: ImageNet classifier' in proc.stdout
    saved = torch.load(out, weights_only=True)
    assert saved['meta']['backbone'] == 'SwinACmix'
    model = SwinACmix(SMALL_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(out)))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for a, b in zip(stage_outputs(model, x), reference(x)):
            assert ((a - b).abs().max() / b.abs().max()).item() < 1e-4


def test_convert_ckpt_tool_refuses_unknown_layouts(tmp_path):
    src = tmp_path / 'other.pth'
    torch.save({'encoder.weight': torch.zeros(2)}, src)
    proc = run_tool('tools/convert_ckpt.py', str(src), str(tmp_path / 'out.pth'))
    assert proc.returncode == 1
    assert 'Unrecognised checkpoint layout (first keys: encoder.weight)' in proc.stderr
    assert 'Traceback' not in proc.stderr
    proc = run_tool('tools/convert_ckpt.py', str(src), str(src))
    assert proc.returncode == 1 and 'SRC and DST are the same file' in proc.stderr
