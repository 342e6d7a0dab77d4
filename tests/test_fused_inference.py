"""Fused inference: the convolution path folded into one grouped conv, same outputs."""
import copy

import pytest
import torch

import acmix_mm  # noqa: F401
from acmix_mm.backbones import PVTACmix, ResNetACmix, SwinACmix
from acmix_mm.layers import ACmix, FusedConvPath, TokenACmix, fuse_acmix

SMALL_SWIN = dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[2, 4, 4, 8])


@pytest.mark.parametrize('build', [
    lambda: PVTACmix('tiny'),
    lambda: SwinACmix(SMALL_SWIN),
    lambda: ResNetACmix(26),
], ids=['PVTACmix', 'SwinACmix', 'ResNetACmix'])
def test_fused_backbone_equals_the_training_form(build):
    torch.manual_seed(0)
    model = build()
    model.init_weights()
    model.eval()
    with torch.no_grad():
        for layer in model.modules():  # rates and fc biases away from their init
            if isinstance(layer, TokenACmix):
                layer.alpha.fill_(0.3)
                layer.beta.fill_(0.7)
                if layer.conv_path.fc.bias is not None:
                    layer.conv_path.fc.bias.normal_()
        x = torch.randn(2, 3, 97, 131)  # odd sizes: borders and padding matter
        expected = model(x)
        fused = copy.deepcopy(model)
        assert fuse_acmix(fused, only_cheaper=False) == 8
        got = fused(x)
    for a, b in zip(got, expected):
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-5


def test_only_layers_where_fusing_is_cheaper_are_fused():
    model = PVTACmix('tiny')  # heads 1, 2, 5, 8: stages 0 and 1 are cheaper fused
    assert fuse_acmix(model) == 4
    assert [isinstance(layer.conv_path, FusedConvPath) for layer in model.modules()
            if isinstance(layer, TokenACmix)] == [True] * 4 + [False] * 4


def test_fused_strided_layer_reads_either_layout():
    """A fused path called with the projection's own row order lays it out itself."""
    torch.manual_seed(0)
    layer = ACmix(16, 16, stride=2).eval()
    x = torch.randn(1, 16, 13, 18)
    with torch.no_grad():
        expected = layer(x)
        layer.fuse_conv_path()
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
        tokens = x.flatten(2).transpose(1, 2)
        torch.testing.assert_close(
            layer.conv_path(layer.project(tokens), (13, 18)),
            layer.conv_path(layer.project(tokens, channel_major=True), (13, 18),
                            channel_major=True))
