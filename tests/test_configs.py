"""Every config in configs/ parses, has a known scope, and builds its model."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config

from conftest import ROOT

CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p)


def test_configs_exist():
    names = {osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS}
    expected = {f'retinanet_pvt{acmix}_{size}_{schedule}.py'
                for acmix in ('', '_acmix') for size in 'tsml' for schedule in ('1x', '3x')
                if schedule == '1x' or size in 'ts'}
    expected |= {f'sem_fpn_pvt_{size}_40k.py' for size in 'ts'}
    expected |= {f'sem_fpn_pvt_acmix_{size}_{s}.py' for size in 'ts' for s in ('40k', '160k')}
    expected |= {'demo/retinanet_pvt_acmix_t_demo.py', 'demo/sem_fpn_pvt_acmix_t_demo.py'}
    assert expected <= names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.relpath(p, ROOT))
def test_config_builds_model(path):
    from acmix_mm.runner_utils import init_scope
    cfg = Config.fromfile(path)
    init_scope(cfg)
    from mmengine.registry import MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_acmix_config_differs_from_baseline_only_in_backbone():
    acmix = Config.fromfile(osp.join(ROOT, 'configs', 'retinanet_pvt_acmix_t_1x.py'))
    base = Config.fromfile(osp.join(ROOT, 'configs', 'retinanet_pvt_t_1x.py'))
    assert acmix.model.backbone.type == 'PVTACmix'
    assert acmix.custom_imports.imports == ['acmix_mm']
    for key in ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader'):
        assert acmix[key] == base[key], key
    assert acmix.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=1e-4)
    assert acmix.train_cfg.max_epochs == 12
    assert acmix.param_scheduler[1].milestones == [8, 11]
    assert acmix.train_dataloader.batch_size == 2  # x 8 GPUs = 16
    assert acmix.auto_scale_lr.base_batch_size == 16
    assert acmix.train_dataloader.dataset.data_root == 'data/coco/'


def test_paper_pvt_acmix_configs_start_as_the_pretrained_pvt():
    """They load official PVT weights with (alpha, beta) = (1, 0); the demos train
    from scratch with the official (0.5, 0.5)."""
    for path in CONFIGS:
        cfg = Config.fromfile(path)
        if cfg.model.backbone.type != 'PVTACmix':
            continue
        if '/demo/' in path:
            assert cfg.model.backbone.init_cfg is None
            assert tuple(cfg.model.backbone.rate_init) == (0.5, 0.5)
        else:
            assert tuple(cfg.model.backbone.rate_init) == (1.0, 0.0), path
            assert cfg.model.backbone.init_cfg.checkpoint.endswith(
                f'pvt_{cfg.model.backbone.arch}.pth'), path


def test_3x_recipe_is_multi_scale_36_epochs():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'retinanet_pvt_acmix_s_3x.py'))
    assert cfg.train_cfg.max_epochs == 36
    assert cfg.param_scheduler[1].milestones == [27, 33]
    resize = cfg.train_dataloader.dataset.pipeline[2]
    assert resize.type == 'RandomResize' and resize.scale == [(1333, 640), (1333, 800)]
    assert cfg.model.backbone.arch == 'small'


def test_semantic_fpn_recipe():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'sem_fpn_pvt_acmix_s_160k.py'))
    assert cfg.default_scope == 'mmseg'
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, weight_decay=1e-4)
    assert cfg.param_scheduler[0].type == 'PolyLR' and cfg.param_scheduler[0].end == 160000
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.train_dataloader.dataset.pipeline[1].reduce_zero_label
