"""The SwinACmix backbone against a reference written as the official Swin-ACmix.

The reference keeps the official key layout (``layers.i.blocks.j.attn.qkv`` ...), so its
state dict stands for an official checkpoint.
"""
import copy

import pytest
import torch

import acmix_mm  # noqa: F401
from acmix_mm.backbones import SwinACmix, swin_official_to_acmix
from acmix_mm.checkpoint import CheckpointError
from acmix_mm.references.swin import ReferenceBlock, ReferenceSwinACmix

from conftest import run_tool

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
