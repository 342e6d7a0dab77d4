"""Sliding-window ACmix (the NCHW ``ACmix`` layer) and the ResNetACmix backbone.

Both are checked against the straightforward references of
acmix_mm.references.resnet_acmix: the operator as the official ResNet-ACmix computes it
(keys and values unfolded k*k-fold), and a ResNet built from it in the official key
layout, whose state dicts therefore are official-layout checkpoints.
"""
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS as DET_MODELS
from mmseg.registry import MODELS as SEG_MODELS

import acmix_mm  # noqa: F401
from acmix_mm.backbones import ResNetACmix, resnet_official_to_acmix
from acmix_mm.checkpoint import CheckpointError
from acmix_mm.layers import ACmix, local_attention, shift_kernels, sliding_window
from acmix_mm.references.resnet_acmix import (
    ReferenceACmix,
    ReferenceResNetACmix,
    ours_from_reference,
)


@pytest.mark.parametrize('in_channels,out_channels,stride,size', [
    (32, 32, 1, (12, 14)), (32, 32, 2, (12, 16)), (16, 32, 1, (9, 11)),
    (32, 32, 2, (9, 13)), (32, 32, 1, (4, 30))])
def test_acmix_layer_equals_the_unfold_formulation(in_channels, out_channels, stride,
                                                   size):
    torch.manual_seed(0)
    reference = ReferenceACmix(in_channels, out_channels, stride=stride).double()
    ours = ours_from_reference(reference, in_channels, out_channels, stride).double()
    x = torch.randn(2, in_channels, *size, dtype=torch.float64, requires_grad=True)
    expected, got = reference(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    # Gradients through the gathers and the fused attention equal the reference's.
    grad_out = torch.randn_like(expected)
    (g_ref, ) = torch.autograd.grad(expected, x, grad_out)
    (g_ours, ) = torch.autograd.grad(got, x, grad_out)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('block,chunk_blocks,path,channel_major',
                         [(1, 7, 'chunked', False), (3, 1, 'chunked', True),
                          (8, 2, 'chunked', False), (16, 128, 'chunked', True),
                          (4, 128, 'autograd', True)])
def test_local_attention_blocks_chunks_and_paths_change_nothing(block, chunk_blocks, path,
                                                                channel_major,
                                                                monkeypatch):
    """Block size, chunking and the projection's layout are for speed and memory only:
    the values and gradients (of q, k, v, the key offset and the output scale) equal
    the plain unfold definition written out here, on the chunked CPU path as on the
    autograd one (used off CPU)."""
    if path == 'autograd':
        monkeypatch.setattr(sliding_window, '_FLASH_CPU', None)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 11 * 19, 2, 4, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    offset = torch.randn(11 * 19, 4, dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    inputs = (q, k, v, offset, scale)
    grad = torch.randn(2, 6 * 10, 2, 4, dtype=torch.float64)

    def attention(block, chunk_blocks, channel_major=False):
        qkv = torch.stack([q, k, v], 2)  # (B, N, 3, heads, d)
        if channel_major:
            qkv = qkv.permute(0, 1, 4, 2, 3)
        return local_attention(qkv.flatten(2), (11, 19), 2, 5, 2, block=block,
                               key_offset=offset, out_scale=scale,
                               channel_major=channel_major, chunk_blocks=chunk_blocks)

    # The plain definition: each query over its reflection-padded 5x5 window, stride 2.
    pad = torch.nn.ReflectionPad2d(2)

    def windows(x):  # (B, N, heads, d) -> (B, heads, d, 25, 6 * 10)
        maps = x.permute(0, 2, 3, 1).reshape(4, 4, 11, 19)
        return F.unfold(pad(maps), 5, stride=2).view(2, 2, 4, 25, 60)

    logits = (q.view(2, 11, 19, 2, 4)[:, ::2, ::2].reshape(2, 60, 2, 4).permute(
        0, 2, 3, 1).unsqueeze(3) * windows(k - offset[:, None])).sum(2) * 4**-0.5
    expected = (logits.softmax(2).unsqueeze(2) * windows(v)).sum(3) * scale
    expected = expected.permute(0, 3, 1, 2)
    expected_grads = torch.autograd.grad(expected, inputs, grad)
    out, out_shape = attention(block, chunk_blocks, channel_major)
    assert out_shape == (6, 10)
    torch.testing.assert_close(out, expected)
    for got, want in zip(torch.autograd.grad(out, inputs, grad), expected_grads):
        torch.testing.assert_close(got, want)


def test_acmix_layer_from_the_registries_replaces_a_conv():
    for registry in (DET_MODELS, SEG_MODELS):
        layer = registry.build(
            dict(type='ACmix', in_channels=16, out_channels=32, kernel_att=7, head=4,
                 kernel_conv=3, stride=2))
        assert isinstance(layer, ACmix)
        assert layer(torch.randn(2, 16, 15, 20)).shape == (2, 32, 8, 10)


def test_too_small_map_is_a_clear_error():
    layer = ACmix(8, 8)
    with pytest.raises(ValueError, match='larger than 3 pixels'):
        layer(torch.randn(1, 8, 3, 10))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match='divisible by head'):
        ACmix(8, 10, head=4)
    with pytest.raises(ValueError, match='dilation 1 only'):
        ACmix(8, 8, dilation=2)
    with pytest.raises(ValueError, match='Unknown ResNetACmix depth 18'):
        ResNetACmix(depth=18)




@pytest.fixture(scope='module')
def official_r26(tmp_path_factory):
    torch.manual_seed(0)
    reference = ReferenceResNetACmix((1, 2, 4, 1)).eval()
    path = tmp_path_factory.mktemp('ckpt') / 'resnet26_acmix_official.pth'
    torch.save({'state_dict': {f'module.{k}': v for k, v in
                               reference.state_dict().items()}}, path)
    return reference, str(path)


@pytest.mark.parametrize('depth,official_params', [(26, 10_487_816), (38, 14_410_896),
                                                   (50, 18_333_976)])
def test_sizes_equal_the_official_models(depth, official_params):
    model = ResNetACmix(depth)
    ours = sum(p.numel() for p in model.parameters())
    acmix_layers = [m for m in model.modules() if isinstance(m, ACmix)]
    # Official extra: the 1000-class head and conv_p's bias (which cancels, see ACmix).
    head = 2048 * 1000 + 1000
    position_bias = sum(m.attn_path.head_dims for m in acmix_layers)
    assert ours + head + position_bias == official_params


def test_converter_places_every_official_key(official_r26):
    reference, _ = official_r26
    official = reference.state_dict()
    converted, discarded = resnet_official_to_acmix(official)
    own = ResNetACmix(26).state_dict()
    assert set(converted) == set(own)
    assert all(converted[k].shape == own[k].shape for k in own)
    left_out = {line.split(':')[0] for line in discarded}
    assert left_out == {'fc.weight', 'fc.bias'} | {
        k for k in official if k.endswith('conv_p.bias')}
    # Every other official tensor went into some converted one.
    used = sum(v.numel() for v in converted.values())
    assert used == sum(official[k].numel() for k in official if k not in left_out)


def test_official_checkpoint_loads_and_gives_the_same_features(official_r26):
    reference, path = official_r26
    model = ResNetACmix(26, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 128, 160)
    with torch.no_grad():
        expected, got = reference(x), model(x)
    for a, b in zip(got, expected):
        assert a.shape == b.shape
        assert ((a - b).abs().max() / b.abs().max()).item() < 1e-4


def test_checkpoint_of_another_depth_lists_the_keys(official_r26):
    _, path = official_r26
    model = ResNetACmix(38, init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError, match='layer1.1.conv2.qkv.weight'):
        model.init_weights()


def test_scratch_init_keeps_shift_kernels_and_rates():
    model = ResNetACmix(26)
    model.init_weights()
    layer = model.layer2[0].conv2
    assert torch.equal(layer.conv_path.dep_conv.weight, shift_kernels(3).repeat(128, 1, 1, 1))
    assert layer.alpha.item() == layer.beta.item() == 0.5


def test_backbone_conventions():
    model = ResNetACmix(26, out_indices=(1, 3), frozen_stages=1, norm_eval=True,
                        with_cp=True)
    model.init_weights()
    model.train()
    assert not any(p.requires_grad for p in model.layer1.parameters())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert not model.bn1.training and not model.layer2[0].bn1.training
    x = torch.randn(1, 3, 97, 131, requires_grad=True)
    outs = model(x)
    assert [o.shape[1:] for o in outs] == [(512, 13, 17), (2048, 4, 5)]
    sum(o.sum() for o in outs).backward()
    assert model.layer4[0].conv2.qkv.weight.grad is not None


def test_own_checkpoint_is_not_taken_for_the_official_layout(tmp_path):
    """Our keys ``conv2.conv_path.*`` once matched the official ``conv2.conv_p``: with
    ``convert_weights=False`` our own checkpoint was refused as an official one."""
    source = ResNetACmix(26)
    torch.save(dict(state_dict=source.state_dict()), tmp_path / 'ours.pth')
    model = ResNetACmix(26, convert_weights=False,
                        init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'ours.pth')))
    model.init_weights()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
