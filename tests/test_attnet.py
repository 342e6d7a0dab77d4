"""The AttNet backbone (Attentive Convolution): reference equality, sizes, checkpoints,
conventions, and its configs on the bundled data."""
import argparse
import os.path as osp
import re

import pytest
import torch
import torch.nn as nn
from mmdet.registry import MODELS as DET_MODELS
from mmseg.registry import MODELS as SEG_MODELS

from acmix_mm.backbones import AttNet, attnet_official_to_ours
from acmix_mm.checkpoint import CheckpointError, save_atomic
from acmix_mm.errors import ConfigError
from acmix_mm.references.attnet import (
    OFFICIAL_ARCHS,
    OFFICIAL_PARAMS,
    ReferenceAttNet,
    randomise,
)

from conftest import ROOT, run_tool
from test_tools import demo_data_options


@pytest.fixture(scope='module', params=['xxs', 't1'])
def official(request, tmp_path_factory):
    """A random official AttNet, saved as its train.py saves (with args and EMA)."""
    torch.manual_seed(0)
    arch = request.param
    model = ReferenceAttNet(arch).eval()
    randomise(model)
    path = tmp_path_factory.mktemp('attnet') / f'AttNet_{arch.upper()}.pth'
    state_dict = model.state_dict()
    save_atomic(dict(model=state_dict, model_ema=state_dict, epoch=299,
                     args=argparse.Namespace(model=f'AttNet_{arch.upper()}', lr=0.004,
                                             drop_path_rate=0.1, log_freq=[100, 200])),
                str(path))
    return arch, model, str(path)


@pytest.mark.parametrize('arch', list(OFFICIAL_ARCHS))
def test_sizes_equal_the_official_minus_its_classifier(arch):
    reference = ReferenceAttNet(arch)
    total = sum(p.numel() for p in reference.parameters())
    assert round(total / 1e6, 2) == OFFICIAL_PARAMS[arch]
    classifier = sum(p.numel() for m in (reference.norm, reference.head)
                     for p in m.parameters())
    assert sum(p.numel() for p in AttNet(arch).parameters()) == total - classifier


@pytest.mark.parametrize('size', [(97, 75), (64, 64), (20, 24)])
def test_official_checkpoint_loads_and_gives_the_same_features(official, size):
    """Any input size, down to maps of fewer positions than kernel taps (2x1 at 20x24,
    whose adaptive pooling repeats positions)."""
    arch, reference, path = official
    model = AttNet(arch, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = reference.stage_outputs(x)
        outs = model.eval()(x)
    assert len(outs) == 4
    for ours, ref in zip(outs, expected):
        assert ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_converter_places_every_official_key(official):
    arch, reference, _ = official
    converted, discarded = attnet_official_to_ours(reference.state_dict())
    assert sorted(discarded) == [
        f'{key}: ImageNet classifier, not part of a backbone'
        for key in ('head.bias', 'head.weight', 'norm.bias', 'norm.weight')]
    AttNet(arch).load_state_dict(converted, strict=True)


def test_convert_ckpt_tool_writes_a_loadable_checkpoint(official, tmp_path):
    arch, reference, path = official
    out = str(tmp_path / 'attnet.pth')
    proc = run_tool('tools/convert_ckpt.py', path, out)
    assert proc.returncode == 0, proc.stderr
    assert 'official AttNet' in proc.stdout and 'head.weight' in proc.stdout
    model = AttNet(arch, init_cfg=dict(type='Pretrained', checkpoint=out))
    model.init_weights()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for ours, ref in zip(model.eval()(x), reference.stage_outputs(x)):
            torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_misfit_checkpoints_and_arguments_are_clear(official):
    arch, _, path = official
    other = 't2' if arch == 'xxs' else 'xxs'
    with pytest.raises(CheckpointError, match='shape mismatches|does not have'):
        AttNet(other, init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()
    with pytest.raises(ConfigError, match='convert_weights'):
        AttNet(arch, convert_weights=False,
               init_cfg=dict(type='Pretrained', checkpoint=path)).init_weights()
    with pytest.raises(ConfigError, match="arch 't5'.*'xxs', 'xs', 's', 't1'"):
        AttNet('t5')
    with pytest.raises(ConfigError, match='custom AttNet arch must be a dict with keys'):
        AttNet(dict(depths=[1, 1, 1, 1]))
    with pytest.raises(ConfigError, match='out_indices'):
        AttNet('xxs', out_indices=(4, ))
    with pytest.raises(ConfigError, match='odd kernel_size'):
        AttNet('xxs', kernel_size=4)


def test_backbone_conventions():
    for registry in (DET_MODELS, SEG_MODELS):
        assert registry.get('AttNet') is AttNet
    model = AttNet('xxs', out_indices=(1, 3), frozen_stages=2, norm_eval=True)
    model.init_weights()
    model.train()
    outs = model(torch.randn(1, 3, 128, 160))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 16, 20), (1, 240, 4, 5)]
    assert model.num_features == [64, 240]
    assert all(not p.requires_grad for s in model.stages[:2] for p in s.parameters())
    assert all(p.requires_grad for s in model.stages[2:] for p in s.parameters())
    assert not any(m.training for s in model.stages[:2] for m in s.modules())
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert model.stages[2].training
    # A custom arch dict, and the official initialisation from scratch.
    custom = AttNet(dict(depths=[1, 1, 1, 1], embed_dims=[16, 32, 48, 64],
                         ffn_ratios=[4, 4, 4, 4], ffn_norm=True, layer_scale=True),
                    out_indices=(0, ))
    custom.init_weights()
    block = custom.stages[0].blocks[0]
    assert torch.all(block.layer_scale1.gamma == 1e-6)
    assert torch.all(block.attn.inhibition_logit == 0)
    assert block.attn.kernel_proj.weight.std() < 0.03  # trunc normal, std 0.02
    assert len(custom(torch.randn(1, 3, 32, 32))) == 1


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = AttNet('xxs', drop_path_rate=0.)
    checkpointed = AttNet('xxs', drop_path_rate=0., with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        sum(o.square().mean() for o in model(x)).backward()
        grads.append(model.stages[1].blocks[0].attn.kernel_gen.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_kernels_are_generated_per_image():
    """Each image's output depends on that image alone (the kernels are not shared
    across the batch), and ATConv is translation-equivariant only through its values:
    two different images give different kernels."""
    from acmix_mm.layers import ATConv
    torch.manual_seed(0)
    layer = ATConv(8).eval()
    a, b = torch.randn(1, 8, 12, 12), torch.randn(1, 8, 12, 12)
    with torch.no_grad():
        both = layer(torch.cat([a, b]))
        torch.testing.assert_close(both[:1], layer(a))
        torch.testing.assert_close(both[1:], layer(b))
        kernels = layer.generate_kernels(torch.cat([a, b]))
    assert not torch.allclose(kernels[0], kernels[1])


# The five AttNet configs, each run for one training iteration and its evaluation on the
# bundled data: the config itself, inherited with the demo data, classes and 256 px
# images (as a user would write it), without the ImageNet weights.
DET_PIPELINES = (
    "[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True{mask}),"
    " dict(type='Resize', scale=(256, 256), keep_ratio=True), dict(type='PackDetInputs')]",
    "[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(256, 256), "
    "keep_ratio=True), dict(type='LoadAnnotations', with_bbox=True{mask}), "
    "dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', "
    "'img_shape', 'scale_factor'))]")
SEG_PIPELINES = (
    "[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),"
    " dict(type='Resize', scale=(256, 256), keep_ratio=True), dict(type='PackSegInputs')]",
    "[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(256, 256), "
    "keep_ratio=True), dict(type='LoadAnnotations', reduce_zero_label=True), "
    "dict(type='PackSegInputs')]")
LOADER = ("dict(batch_size=2, num_workers=0, persistent_workers=False, "
          "dataset=dict(data_root='{root}', {extra}pipeline={pipeline}))")


def demo_config(name, data_root, path):
    lines = [f"_base_ = '{osp.join(ROOT, 'configs', name + '.py')}'"]
    if name.startswith(('sem_fpn', 'upernet')):
        root = osp.join(data_root, 'ade', 'ADEChallengeData2016')
        train, test = SEG_PIPELINES
        extra = ''
        lines += ['train_cfg = dict(max_iters=1, val_interval=1)',
                  'default_hooks = dict(checkpoint=dict(interval=1))']
    else:
        root = osp.join(data_root, 'coco') + '/'
        mask = ', with_mask=True' if name.startswith('mask_rcnn') else ''
        train, test = (p.format(mask=mask) for p in DET_PIPELINES)
        extra = "metainfo=dict(classes=('circle', 'square', 'triangle')), "
        if name.startswith('mask_rcnn'):
            lines.append('model = dict(roi_head=dict(bbox_head=dict(num_classes=3), '
                         'mask_head=dict(num_classes=3)), '
                         'test_cfg=dict(rcnn=dict(score_thr=0.0)))')
        else:
            lines.append('model = dict(bbox_head=dict(num_classes=3), '
                         'test_cfg=dict(score_thr=0.0))')
        ann = root + 'annotations/instances_val2017.json'
        lines += [f"val_evaluator = dict(ann_file='{ann}')", 'test_evaluator = val_evaluator',
                  'train_cfg = dict(max_epochs=1)']
    lines += [
        'train_dataloader = ' + LOADER.format(root=root, extra=extra, pipeline=train),
        'val_dataloader = ' + LOADER.format(root=root, extra=extra, pipeline=test),
        'test_dataloader = val_dataloader', 'randomness = dict(seed=0)'
    ]
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


# One detector and one segmentor, T1 and T2: RetinaNet AttNet-T1 3x trains with its real
# pipeline in test_paper_configs (the 1x differs only in its schedule), and UperNet's
# path is Swin-ACmix's there.
@pytest.mark.parametrize('name', ['sem_fpn_attnet_t1_40k', 'mask_rcnn_attnet_t2_3x'])
def test_config_trains_one_iteration_on_the_bundled_data(name, tiny_demo_data, tmp_path):
    config = demo_config(name, tiny_demo_data, tmp_path / f'{name}_demo.py')
    proc = run_tool('tools/train.py', config, '--work-dir', str(tmp_path / 'work'),
                    '--cfg-options', 'model.backbone.init_cfg=None')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "type='AttNet'" in log
    assert re.search(r'(Epoch\(train\) \[1\]\[1/1\]|Iter\(train\) \[1/1\]).*loss: [0-9.]+',
                     log)
    metric = r'mIoU: [0-9.]+' if name.startswith(('sem_fpn', 'upernet')) else \
        r'coco/bbox_mAP: [0-9.]+'
    assert re.search(metric, log), log[-3000:]
    if name.startswith('mask_rcnn'):
        assert re.search(r'coco/segm_mAP: [0-9.]+', log)


def test_demo_config_trains_one_iteration_on_the_bundled_data(tiny_demo_data, tmp_path):
    proc = run_tool('tools/train.py', 'configs/demo/retinanet_attnet_t1_demo.py',
                    '--work-dir', str(tmp_path), '--cfg-options',
                    *demo_data_options(tiny_demo_data), 'train_dataloader.batch_size=2',
                    'train_cfg.max_epochs=1')
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "type='AttNet'" in log
    assert re.search(r'Epoch\(train\) \[1\]\[1/1\].*loss: [0-9.]+', log)
    assert re.search(r'coco/bbox_mAP: [0-9.]+', log), log[-3000:]
